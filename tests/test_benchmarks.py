"""The benchmark harness runs end to end in quick mode (figures are not judged here: no thresholds in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.edge.packages import tiny_packages  # noqa: F401  (session fixture, for the counts section)

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("variants", "publisher", "training", "end_to_end", "hot_swap", "cameras")


@pytest.mark.slow
def test_quick_benchmarks_write_every_section_and_the_plot(tmp_path):
    # given: a scratch output folder
    out = tmp_path / "bench"

    # when: the quick mode runs as CI runs it
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )

    # then: every section ran, the targets were checked, the table and both files exist
    assert done.returncode == 0, f"benchmarks failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    result = json.loads((out / "bench.json").read_text())
    for name in SECTIONS:
        section = result["sections"].get(name)
        assert section is not None, f"section {name} missing from bench.json"
        assert "error" not in section, f"section {name} failed:\n{section.get('error')}"
    assert result["targets"] and all(t["status"] in ("met", "missed", "not measured") for t in result["targets"])
    assert result["machine"]["cpu_model"] and "threads" in result["machine"], "CPU and threads not recorded"
    assert (out / "bench.png").stat().st_size > 10_000, "the plot is missing or empty"
    assert "Targets" in done.stdout and "CPU:" in done.stdout, "the table was not printed"


def test_counts_without_a_detector_fails_the_run_naming_make_demo(tmp_path, monkeypatch):
    # given: no registry where the demo's would be (MLFLOW_TRACKING_URI names a file that does not exist)
    monkeypatch.delenv("LENSOPS_BENCH_MODEL", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}")
    out = tmp_path / "bench"

    # when: the counts section is asked for
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "counts", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    # then: the run fails, says what to run, and creates no registry
    assert done.returncode == 1, f"expected exit 1:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "make demo" in done.stdout, done.stdout
    assert "make demo" in json.loads((out / "bench.json").read_text())["sections"]["counts"]["error"]
    assert not (tmp_path / "missing").exists(), "a registry was created where none was"


def test_counts_scoring_lines_frames_up_only_when_every_frame_was_published(tmp_path):
    from benchmarks.counts import Scene, score_scene, summarize

    # given: a three-frame scene (the second frame has one object mostly out of view)
    truth = [
        {"objects": [{"label": "circle", "difficult": False}]},
        {"objects": [{"label": "circle", "difficult": False}, {"label": "star", "difficult": True}]},
        {"objects": [{"label": "square", "difficult": False}]},
    ]
    scene = Scene("seed101", "unseen", 101, tmp_path / "video.mp4", truth)
    published = {0: {"counts": {"circle": 1}}, 1: {"counts": {"circle": 1}}, 2: {"counts": {"circle": 1}}}

    # when: every frame was published, and when the last one was not
    full = score_scene(scene, published)
    gap = score_scene(scene, {0: published[0], 1: published[1]})

    # then: VOC-style the first two match (the difficult star is optional), strictly only the first;
    # the third is a shape taken for another; with a frame missing nothing lines up, so nothing matches
    assert (full["matching"], full["strict"]) == (2, 1), full
    assert full["mismatch_kinds"]["both"] == 1, full["mismatch_kinds"]
    assert gap["matching"] == 0 and gap["mismatch_kinds"]["not published"] == 1, gap
    summary = summarize([full, gap])
    assert summary["share_all"] == round(2 / 6, 4) and summary["worst"]["share"] == 0.0, summary


@pytest.mark.slow
def test_quick_counts_section_runs_on_a_tiny_detector_package(tiny_packages, tmp_path):  # noqa: F811
    # given: the session's tiny detector package (its counts are meaningless: only the harness is judged)
    out = tmp_path / "bench"

    # when: the counts section runs in quick mode on it
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--only",
            "counts",
            "--quick",
            "--out",
            str(out),
            "--model",
            str(tiny_packages.detector.archive),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )

    # then: every scene was played by one runner, every frame published and scored, both goals checked
    assert done.returncode == 0, f"benchmarks failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    section = json.loads((out / "bench.json").read_text())["sections"]["counts"]
    assert [s["seed"] for s in section["scenes"]] == [7, 101, 102, 103, 104, 105], section["scenes"]
    for scene in section["scenes"]:
        assert scene["frames"] == scene["published"] == 30, scene
        assert 0.0 <= scene["share"] <= 1.0 and scene["strict"] <= scene["frames"], scene
    targets = [t for t in json.loads((out / "bench.json").read_text())["targets"] if t["target"].startswith("counts")]
    assert len(targets) == 2 and all(t["status"] in ("met", "missed") for t in targets), targets
    assert "worst scene" in done.stdout and "goals: >= 95% of all frames" in done.stdout, done.stdout[-3000:]


def test_camera_search_finds_the_largest_count_kept_from_the_bound_within_its_trials():
    from benchmarks.cameras import search

    for largest, start in ((0, 24), (1, 24), (5, 24), (17, 24), (24, 24), (31, 24), (60, 24), (3, 1)):
        tried: list[int] = []

        def kept(n: int) -> bool:
            tried.append(n)
            return n <= largest

        found = search(kept, start=start, max_trials=9, ceiling=48)
        expected = (largest, largest + 1) if largest < 48 else (48, None)
        assert found == expected, (largest, found, tried)
        assert tried[0] == start and len(tried) <= 9 and len(set(tried)) == len(tried), tried
    # out of trials: the largest kept so far and the smallest not kept so far
    assert search(lambda n: n <= 17, start=24, max_trials=2, ceiling=48) == (16, 24)


def test_recipe_chance_bar_and_overrides_are_pure_functions():
    from benchmarks.recipe import chance_bar, parse_overrides

    # 5 classes, 900 validation images: 0.2 + 3 * sqrt(0.2 * 0.8 / 900) = 0.24
    assert abs(chance_bar(5, 900) - 0.24) < 1e-9, chance_bar(5, 900)
    assert parse_overrides(["lr=0.2", "optimizer=adam", "epochs=3"]) == {"lr": 0.2, "optimizer": "adam", "epochs": 3}
    with pytest.raises(SystemExit, match="key=value"):
        parse_overrides(["lr"])


def test_recipe_names_a_missing_params_section_and_exits_2(tmp_path, capsys):
    from benchmarks.recipe import main

    params = tmp_path / "params.yaml"
    params.write_text("train_classifier: {task: classification}\n")
    assert main(["--params", str(params), "--section", "train_detector", "--seeds", "0"]) == 2
    assert "train_detector" in capsys.readouterr().err


def test_recipe_names_bad_seeds_and_a_section_without_data(tmp_path, capsys):
    from benchmarks.recipe import main

    params = tmp_path / "params.yaml"
    params.write_text("train_classifier: {task: classification}\n")
    assert main(["--params", str(params), "--seeds", "0,a"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["--params", str(params), "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert "'data'" in err and "train_classifier" in err, err


def test_recipe_chain_follows_init_from_to_the_section_that_trains_it_and_names_a_loop():
    from benchmarks.recipe import chain
    from common.errors import UserError

    params = {
        "first": {"model_dir": "models/a"},
        "second": {"model_dir": "models/b", "init_from": "models/a"},
        "third": {"model_dir": "models/c", "init_from": "models/b"},
        "outside": {"model_dir": "models/d", "init_from": "/elsewhere/model"},
    }
    assert chain(params, "third") == ["first", "second", "third"]
    assert chain(params, "outside") == ["outside"], "an init_from no section trains starts the chain"
    params["first"]["init_from"] = "models/c"
    with pytest.raises(UserError, match="'first' loops back to section 'third'"):
        chain(params, "third")


def test_a_probe_a_variant_beats_is_no_peak_and_the_int8_text_follows_the_cpu_flags():
    from benchmarks.report import _variants
    from benchmarks.variants import int8_units, mark_non_peaks

    # the AMX machine: openvino-bf16 at 2.3x "of peak"
    peaks = {
        "threads": 2,
        "fp32": {"gflops": 100.0, "how": "ORT MatMul"},
        "int8": {"gflops": 400.0, "how": "ORT MatMulInteger"},
        "bf16": {"gflops": 50.0, "native": True, "how": "OpenVINO 1x1 Conv, bf16 hint"},
    }
    rows = [
        {"model": "m", "batch": 1, "variant": "openvino-bf16", "precision": "bf16", "gflops": 115.0},
        {"model": "m", "batch": 1, "variant": "onnx-int8", "precision": "int8", "gflops": 90.0},
    ]
    marked = mark_non_peaks(peaks, rows)
    assert marked["bf16"]["peak"] is False and "openvino-bf16" in marked["bf16"]["beaten_by"], marked["bf16"]
    assert marked["int8"]["peak"] and marked["fp32"]["peak"] and "peak" not in peaks["bf16"], "inputs untouched"
    head = _variants({"peaks": marked, "rows": []})
    assert "bf16: not a peak" in head and "openvino-bf16 (m, batch 1) at 115.0 beat it" in head, head
    assert int8_units({"amx_int8", "avx512_vnni", "avx2"}) == "AMX and VNNI"
    assert int8_units({"avx_vnni"}) == "VNNI" and int8_units({"avx2", "avx512f"}) == "no VNNI/AMX"


def test_anchor_coverage_counts_objects_at_the_network_input_and_names_bad_input(tiny_det, tmp_path, capsys):
    from benchmarks.anchors import coverage, main

    row = coverage(tiny_det, "ssd_96_mobilenet0.25", "train")
    assert row["objects"] > 0 and row["anchors"] > 0
    assert 0.0 <= row["share_without_anchor_at_0.5"] <= 1.0 and 0.0 < row["median_best_iou"] <= 1.0
    sides = row["object_side_px_percentiles"]
    assert sides == sorted(sides) and sides[-1] <= 96 * 1.5  # network-input pixels, not the image's
    assert main(["--data", str(tiny_det), "--network", "ssd_96_mobilenet0.25"]) == 0
    assert "share_without_anchor_at_0.5" in capsys.readouterr().out
    assert main(["--data", str(tmp_path / "nothing"), "--network", "ssd_96_mobilenet0.25"]) == 2
    assert str(tmp_path / "nothing") in capsys.readouterr().err
    assert main(["--data", str(tiny_det), "--network", "yolo"]) == 2
    assert "yolo" in capsys.readouterr().err
    assert main(["--data", str(tiny_det), "--network", "ssd_96_mobilenet0.25", "--split", "tarin"]) == 2
    assert "'tarin'" in capsys.readouterr().err


def test_operating_point_refuses_the_scenes_counts_reports_on_and_bad_thresholds(tmp_path, capsys):
    from benchmarks.operating_point import main

    assert main(["--seeds", "1,101"]) == 2
    err = capsys.readouterr().err
    assert "[101]" in err and "unseen" in err, err
    assert main(["--seeds", "7"]) == 2  # the demo video (params.yaml data.seed)
    assert "[7]" in capsys.readouterr().err
    assert main(["--score", "0.5,1.5"]) == 2
    assert "--score: 1.5" in capsys.readouterr().err
    assert main(["--hold", "x"]) == 2
    assert "--hold: 'x'" in capsys.readouterr().err
    assert main(["--score", "0.3", "--hold", "0.4"]) == 2  # checked before any package is opened
    assert "no pair with hold below score" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing.tar.gz")]) == 2
    assert str(tmp_path / "missing.tar.gz") in capsys.readouterr().err


@pytest.mark.slow
def test_operating_point_plays_validation_scenes_through_the_package_for_every_pair(tiny_packages, tmp_path, capsys):  # noqa: F811
    from benchmarks.operating_point import main

    # given: the session's tiny detector package (its shares are meaningless: only the harness is judged)
    out = tmp_path / "rows.json"

    # when: two validation scenes of 10 frames are played for a 2 x 2 grid
    code = main(
        [
            "--model",
            str(tiny_packages.detector.archive),
            "--seeds",
            "1,2",
            "--frames",
            "10",
            "--score",
            "0.3,0.5",
            "--hold",
            "none,0.4",
            "--out",
            str(out),
        ]
    )

    # then: one row per pair with hold below score (0.3/0.4 is left out), shares per scene, and the best pair
    assert code == 0, capsys.readouterr().err
    rows = json.loads(out.read_text())["rows"]
    assert [(r["score_threshold"], r["hold_threshold"]) for r in rows] == [(0.3, None), (0.5, None), (0.5, 0.4)]
    for row in rows:
        assert set(row["per_scene"]) == {"1", "2"} and 0.0 <= row["share_worst"] <= row["share_all"] <= 1.0, row
    assert "best: score_threshold=" in capsys.readouterr().out
