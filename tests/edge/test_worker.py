"""The inference worker's two threads: inference of the next frame overlaps delivery of the last one,
delivery keeps the order, and `done` waits for the last frame to leave the sinks."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest

from edge.latency_window import Window
from edge.messages import Prediction
from edge.predictor import Result
from edge.sources import Source, parse_source
from edge.worker import InferenceWorker

WAIT_S = 10.0


class Frames:
    """A reader (edge.source_kinds.Reader) of n small frames; frame i is filled with the value i."""

    def __init__(self, n: int):
        self.n, self.next = n, 0

    def read(self):
        if self.next >= self.n:
            return None
        self.next += 1
        return np.full((4, 4, 3), self.next - 1, np.uint8)

    def release(self) -> None:
        pass


class Model:
    """A predictor stand-in that records which frames it saw; `gate(i)` holds frame i until released."""

    manifest = SimpleNamespace(labels=("thing",), task="detection")
    name = "m"

    def __init__(self, swap_at: int = 64):
        self.swap_at = swap_at  # frames from this index on are served by version 2
        self.seen: list[int] = []
        self.previous: list = []
        self.called = {i: threading.Event() for i in range(64)}

    def predict(self, image: np.ndarray, previous=None) -> Result:
        index = int(image[0, 0, 0])
        self.seen.append(index)
        self.previous.append(previous)
        self.called[index].set()
        found = [Prediction(label="thing", score=index / 100, box=[0.1, 0.1, 0.2, 0.2])]  # the score tells the frame
        return Result(
            found,
            {"thing": 1},
            {"preprocess": 0.0, "inference": 0.0, "total": float(index + 1)},  # frame i took i + 1 ms
            {"name": "m", "version": "2" if index >= self.swap_at else "1", "variant": "v"},
        )


class Manager:
    def __init__(self, predictor):
        self.predictor, self.ready = predictor, threading.Event()
        self.ready.set()

    def current(self):
        return self.predictor

    def report_latency(self, _ms, _predictor=None):
        pass

    def report_failure(self, _reason, _predictor=None):
        pass


def file_source(n: int, folder) -> Source:
    """A replayed file source (waits for the consumer, never drops) whose reader hands out n frames."""
    reader = Frames(n)
    video = folder / "frames.mp4"
    video.touch()
    return Source(
        parse_source(dict(id="cam", uri=str(video), fps=0, drop=False)),
        open_reader=lambda _config: reader,
    )


@contextmanager
def running(source: Source, worker: InferenceWorker, on_exit=lambda: None):
    source.start()
    worker.start()
    try:
        yield
    finally:
        on_exit()
        worker.stop()
        source.stop()


def test_next_frame_is_inferred_while_the_last_one_is_delivered(tmp_path):
    # given a sink that holds frame 0 until the model has been called for frame 1
    model = Model()
    delivered: list[int] = []
    overlapped = []

    def slow_sink(inferred):
        if inferred.frame.index == 0:
            overlapped.append(model.called[1].wait(WAIT_S))
        delivered.append(inferred.frame.index)

    source = file_source(5, tmp_path)
    worker = InferenceWorker(source, Manager(model), [("slow", slow_sink)])
    # when the source plays to its end
    with running(source, worker):
        assert worker.wait_done(WAIT_S), f"worker not done: {worker.stats()}"
    # then frame 1 was inferred before frame 0 left the sink, and every frame was delivered in order
    assert overlapped == [True], "inference waited for delivery: the two stages did not overlap"
    assert delivered == [0, 1, 2, 3, 4] and model.seen == [0, 1, 2, 3, 4]
    # and each frame was predicted knowing the source's previous frame (a detector's hold-over reads it)
    assert model.previous[0] is None and [round(p[0].score * 100) for p in model.previous[1:]] == [0, 1, 2, 3]


def test_done_only_after_the_last_frame_left_the_sinks(tmp_path):
    # given a sink held on the last frame
    model = Model()
    release, entered = threading.Event(), threading.Event()
    delivered: list[int] = []

    def held_sink(inferred):
        if inferred.frame.index == 2:
            entered.set()
            release.wait(WAIT_S)
        delivered.append(inferred.frame.index)

    source = file_source(3, tmp_path)
    worker = InferenceWorker(source, Manager(model), [("held", held_sink)])
    with running(source, worker, on_exit=release.set):
        # when every frame was inferred but the last one is still in the sink
        assert entered.wait(WAIT_S)
        # then the worker is not done; once the sink lets go it is
        assert not worker.done and delivered == [0, 1]
        release.set()
        assert worker.wait_done(WAIT_S) and delivered == [0, 1, 2]


def test_a_failing_sink_is_counted_and_the_others_still_get_every_frame(tmp_path):
    # given one sink that always raises and one that records
    model = Model()
    seen: list[int] = []

    def broken(_inferred):
        raise RuntimeError("disk full")

    source = file_source(4, tmp_path)
    worker = InferenceWorker(source, Manager(model), [("broken", broken), ("ok", lambda i: seen.append(i.frame.index))])
    with running(source, worker):
        assert worker.wait_done(WAIT_S)
    stats = worker.stats()
    assert (
        seen == [0, 1, 2, 3] and stats["sink_errors"] == 4 and "broken: RuntimeError: disk full" in stats["last_error"]
    )


def test_frames_of_an_image_folder_are_predicted_without_the_previous_one(tmp_path):
    # given an image folder source: its frames are unrelated stills
    model = Model()
    reader = Frames(3)
    folder = tmp_path / "stills"
    folder.mkdir()
    (folder / "0.jpg").touch()  # the folder must hold images; the reader here hands out its own frames
    source = Source(
        parse_source(dict(id="stills", uri=str(folder), fps=0, drop=False)),
        open_reader=lambda _config: reader,
    )
    worker = InferenceWorker(source, Manager(model), [])
    with running(source, worker):
        assert worker.wait_done(WAIT_S)
    # then no frame was held against the one before it
    assert model.seen == [0, 1, 2] and model.previous == [None, None, None]


def test_stats_give_latency_and_frame_age_percentiles_of_the_model_serving_now(tmp_path):
    # given a model whose frame i takes i + 1 ms, swapped for version 2 from frame 5 on
    model = Model(swap_at=5)
    source = file_source(10, tmp_path)
    worker = InferenceWorker(source, Manager(model), [])
    assert worker.stats()["latency_ms"] is None and worker.stats()["frame_age_ms"] is None, "no frame yet"
    with running(source, worker):
        assert worker.wait_done(WAIT_S)
    # then the figures are of version 2's frames only (5..9: 6..10 ms), numpy's percentiles
    stats = worker.stats()
    expected = np.percentile([6.0, 7.0, 8.0, 9.0, 10.0], [50, 99])
    assert stats["model"]["version"] == "2"
    assert stats["latency_ms"] == {"p50": round(expected[0], 2), "p99": round(expected[1], 2), "n": 5}
    age = stats["frame_age_ms"]
    assert age["n"] == 5 and 0 <= age["p50"] <= age["p99"]


def test_window_keeps_the_last_n_values():
    window = Window(size=4)
    assert window.percentiles() is None
    for ms in (100.0, 1.0, 2.0, 3.0, 4.0):  # 100 falls out
        window.add(ms)
    assert len(window) == 4
    assert window.percentiles() == {"p50": 2.5, "p99": round(float(np.percentile([1, 2, 3, 4], 99)), 2), "n": 4}
    window.clear()
    assert window.percentiles() is None and len(window) == 0
    with pytest.raises(ValueError, match="window size 0"):
        Window(size=0)
