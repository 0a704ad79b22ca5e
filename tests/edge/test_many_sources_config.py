"""The device config's keys for many sources: `decode_threads` sets FFmpeg's threads of a file or stream (a
device with at least as many sources as cores decodes each on one thread unless the config says otherwise),
`batch` and `switch_interval_ms` reach the runner, and a bad value of any is one clear line."""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import pytest

from edge.config import ConfigError
from edge.runner import Runner
from edge.package.runtimes import default_threads
from edge.scaling import inference_threads, with_decode_threads
from edge.sources import Source, parse_source
from tests.edge.test_config import MINIMAL, load_text, project, write_video  # noqa: F401 (fixture)


def test_a_device_with_as_many_sources_as_cores_decodes_each_on_one_thread(tmp_path):
    video = str(write_video(tmp_path / "clip.mp4"))
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    configs = [
        parse_source({"id": "a", "uri": video}),
        parse_source({"id": "b", "uri": video, "decode_threads": 3}),  # the config's own choice stays
        parse_source({"id": "c", "uri": "rtsp://cam/live"}),
        parse_source({"id": "d", "uri": str(tmp_path / "imgs")}),  # a folder decodes no video
    ]
    filled = with_decode_threads(configs, cores=4)
    assert [getattr(c, "decode_threads", None) for c in filled] == [1, 3, 1, None]
    fewer = with_decode_threads(configs, cores=8)
    assert [getattr(c, "decode_threads", None) for c in fewer] == [None, 3, None, None], "FFmpeg's choice"
    assert configs[0].decode_threads is None, "the parsed config is not changed in place"


def test_one_decoder_thread_decodes_the_same_frames(tmp_path):
    video = str(write_video(tmp_path / "clip.mp4"))
    readers = [parse_source({"id": "a", "uri": video, **extra}).open_reader() for extra in ({}, {"decode_threads": 1})]
    try:
        assert readers[1]._cap.get(cv2.CAP_PROP_N_THREADS) == 1, "FFmpeg was given one thread"
        while True:
            frames = [reader.read() for reader in readers]
            if frames[0] is None:
                assert frames[1] is None, "the same number of frames"
                break
            assert np.array_equal(frames[0], frames[1])
    finally:
        for reader in readers:
            reader.release()


@pytest.mark.parametrize(
    "source, expected",
    [
        ("{id: door, uri: data/demo/video.mp4, decode_threads: 0}", "sources[0].decode_threads: Input should be"),
        ("{id: door, uri: data/demo/video.mp4, decode_threads: many}", "sources[0].decode_threads: Input should be"),
        (
            "{id: door, uri: 0, decode_threads: 1}",
            "sources[0]: source 'door': decode_threads applies to rtsp/http streams and video files, not to the camera",
        ),
    ],
)
def test_a_bad_decode_threads_is_one_line_naming_the_key(project, source, expected):
    with pytest.raises(ConfigError) as error:
        load_text(project, MINIMAL.replace("{id: door, uri: data/demo/video.mp4}", source))
    message = str(error.value)
    assert expected in message and len(message.splitlines()) == 1, message


@pytest.mark.parametrize(
    "line, expected",
    [
        ("batch: {max_size: 0}", "batch.max_size: Input should be greater than or equal to 1"),
        ("batch: {deadline_ms: -1}", "batch.deadline_ms: Input should be greater than or equal to 0"),
        ("batch: {size: 8}", "batch.size: unknown key (did you mean 'max_size'?)"),
        ("switch_interval_ms: 0", "switch_interval_ms: Input should be greater than 0"),
        ("capture_nice: 20", "capture_nice: Input should be less than or equal to 19"),
    ],
)
def test_a_bad_batch_or_switch_interval_is_one_line_naming_the_key(project, line, expected):
    with pytest.raises(ConfigError) as error:
        load_text(project, MINIMAL + line + "\n")
    message = str(error.value)
    assert expected in message and len(message.splitlines()) == 1, message


def test_batch_and_switch_interval_reach_the_runner(project):
    config = load_text(project, MINIMAL + "batch: {max_size: 4, deadline_ms: 2.5}\nswitch_interval_ms: 2\n")
    runner = Runner.from_config(config, project / "state")  # built, not started: nothing connects yet
    assert [(b.config.max_size, b.config.deadline_ms, b.members) for b in runner.batchers.values()] == [(4, 2.5, 1)]
    assert runner.switch_interval_ms == 2
    assert [source._nice for source in runner.sources] == [10], "the default"


def test_capture_threads_run_nicer_than_the_rest(tmp_path):
    video = str(write_video(tmp_path / "clip.mp4", frames=30))
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    for nice, expected in ((10, min(base + 10, 19)), (0, base)):
        source = Source(parse_source({"id": "a", "uri": video, "fps": 5}), nice=nice).start()
        try:
            assert source.get(timeout=10) is not None, "the capture thread delivers"
            capture = source._threads[0]  # start() spawns the capture thread, then the watchdog
            assert os.getpriority(os.PRIO_PROCESS, capture.native_id) == expected, nice
        finally:
            source.stop()
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base, "the caller's thread is untouched"


def test_inference_threads_are_one_per_model_from_as_many_sources_as_cores(project):
    assert inference_threads(None, sources=2, cores=2) == 1
    assert inference_threads(None, sources=1, cores=2) is None, "the runtime's default: every core"
    assert inference_threads(3, sources=16, cores=2) == 3, "the config's threads win"
    many = "".join(f"  - {{id: cam{i}, uri: data/demo/video.mp4}}\n" for i in range(default_threads()))
    text = MINIMAL.replace("  - {id: door, uri: data/demo/video.mp4}\n", many)
    runner = Runner.from_config(load_text(project, text), project / "state")
    assert [m.threads for m in runner.managers.values()] == [1]
    assert {s.config.decode_threads for s in runner.sources} == {1}


def test_only_a_model_s_own_sources_count_for_its_threads(project):
    cores = default_threads()
    many = "".join(f"  - {{id: cam{i}, uri: data/demo/video.mp4}}\n" for i in range(cores - 1))
    many += "  - {id: shelf, uri: data/demo/video.mp4, model: shapes-classifier}\n"
    text = MINIMAL.replace("  - {id: door, uri: data/demo/video.mp4}\n", many)
    runner = Runner.from_config(load_text(project, text), project / "state")
    assert {name: m.threads for name, m in runner.managers.items()} == {
        "shapes-detector": None if cores > 1 else 1,
        "shapes-classifier": 1 if cores == 1 else None,
    }
