"""A detector's operating point on a stream, chosen on validation scenes: `python -m benchmarks.operating_point`.

The device publishes a box when it scores at least `score_threshold`, or at least `hold_threshold`
where it continues a box of the same label on the previous frame (`edge.package.codec.hold_over`,
ByteTrack's idea: Zhang et al., ECCV 2022). Both are written into the package (`pipeline.score_threshold`,
`pipeline.hold_threshold` in params.yaml). This tool plays validation scenes (demo generator seeds
1-5 by default: never the demo video or the unseen seeds 101-105 that `python -m benchmarks --only
counts` reports on) through the package's own `Predictor.predict`, as the runner calls it frame after
frame, for every pair of the grid, and prints per pair the share of frames whose counts match the
ground truth (VOC-style, `benchmarks.ground_truth.counts_within`) over all scenes and in the worst
scene. The pair to put in params.yaml is the best share over all frames (ties: the better worst scene).

  python -m benchmarks.operating_point                                 # shapes-detector@production of make demo
  python -m benchmarks.operating_point --model packages/detector.tar.gz --seeds 1,2,3
  python -m benchmarks.operating_point --score 0.5,0.6 --hold none,0.2

Figures depend on the detector: a newly trained one may want another pair (re-run after training).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from common.errors import CLI_ERRORS, UserError, print_error
from common.files import write_json

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEEDS = (1, 2, 3, 4, 5)
DEFAULT_SCORES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_HOLDS = (None, 0.1, 0.2, 0.3)


class UsageError(UserError):
    """A bad argument: the message names it."""


def _floats(text: str, name: str, allow_none: bool = False) -> tuple:
    values = []
    for part in text.split(","):
        part = part.strip()
        if allow_none and part.lower() == "none":
            values.append(None)
            continue
        try:
            value = float(part)
        except ValueError:
            raise UsageError(f"{name}: {part!r} is not a number{' or none' if allow_none else ''}") from None
        if not 0 < value < 1:
            raise UsageError(f"{name}: {value} is not between 0 and 1")
        values.append(value)
    return tuple(values)


def _seeds(text: str, reserved: set[int]) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UsageError(f"--seeds: {text!r} is not a comma-separated list of integers") from None
    used = sorted(set(seeds) & reserved)
    if used:
        raise UsageError(
            f"--seeds: {used} are the scenes `python -m benchmarks --only counts` reports on "
            f"(the demo video and the unseen seeds); a setting chosen on them would not be measured "
            f"on unseen scenes"
        )
    return seeds


def load_predictor(model: Optional[str], work: Path, variant: Optional[str] = None):
    """The package of --model (models:/NAME@ALIAS, or a package archive / folder), verified (sha256 of the
    archive against the registry, every file against the manifest, as a device does) and loaded as the
    runner loads it: `variant`, or this machine's fastest that passes its golden samples."""
    from benchmarks.counts import find_detector
    from edge.package import open_package
    from edge.predictor import Predictor
    from edge.registry import MlflowRegistry, download_package

    if model and not model.startswith("models:/"):
        folder, manifest = open_package(Path(model), work)
        note = f"package {model}"
    else:
        detector = find_detector(model, ROOT, work)
        registry = MlflowRegistry(detector.uri)
        resolved = registry.resolve(detector.name, detector.alias)
        folder, manifest = download_package(registry, resolved, work / "package.tar.gz", work)
        note = detector.note
    if manifest.task != "detection":
        raise UsageError(f"{note}: a {manifest.task} model; the operating point is a detector's")
    return Predictor.load(folder, manifest, prefer_variant=variant), note


def read_frames(video: Path, expected: int) -> list:
    """Every frame of `video` (BGR); UsageError naming it when it holds another number than `expected`."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    if len(frames) != expected:
        raise UsageError(f"{video}: decoded {len(frames)} frames, its ground truth lists {expected}")
    return frames


def play(predictor, frames: list, truth: list[dict], score: float, hold: Optional[float]) -> int:
    """Frames whose counts match, with the manifest's thresholds set to (score, hold), frame after frame."""
    from dataclasses import replace

    from benchmarks.ground_truth import counts_within

    output = predictor.manifest.output.model_copy(update={"score_threshold": score, "hold_threshold": hold})
    player = replace(predictor, manifest=predictor.manifest.model_copy(update={"output": output}), score_threshold=None)
    previous, matching = None, 0
    for frame, expected in zip(frames, truth):
        result = player.predict(frame, previous)
        previous = result.predictions
        matching += counts_within(result.counts, expected["objects"])
    return matching


def sweep(predictor, scenes: list, scores: Sequence[float], holds: Sequence[Optional[float]]) -> list[dict]:
    """One row per (score, hold) pair with hold below score: shares over all frames and per scene."""
    decoded = [(scene.seed, read_frames(scene.video, len(scene.truth)), scene.truth) for scene in scenes]
    total = sum(len(truth) for _, _, truth in decoded)
    rows = []
    for score in scores:
        for hold in holds:
            if hold is not None and hold >= score:
                continue
            matched = {seed: play(predictor, frames, truth, score, hold) for seed, frames, truth in decoded}
            per = {seed: matched[seed] / len(truth) for seed, _, truth in decoded}
            rows.append(
                {
                    "score_threshold": score,
                    "hold_threshold": hold,
                    "share_all": round(sum(matched.values()) / total, 4),
                    "share_worst": round(min(per.values()), 4),
                    "per_scene": {s: round(v, 4) for s, v in per.items()},
                }
            )
    return rows


def best(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: (r["share_all"], r["share_worst"]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    from benchmarks.counts import UNSEEN_SEEDS, demo_video_params, make_scenes

    parser = argparse.ArgumentParser(prog="python -m benchmarks.operating_point", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=None,
        help="models:/NAME@ALIAS or a package .tar.gz / folder (default models:/shapes-detector@production)",
    )
    parser.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="validation scene seeds")
    parser.add_argument("--frames", type=int, default=None, help="frames per scene (default: the demo video's)")
    parser.add_argument("--score", default=",".join(map(str, DEFAULT_SCORES)), help="score thresholds to try")
    parser.add_argument(
        "--hold",
        default=",".join("none" if h is None else str(h) for h in DEFAULT_HOLDS),
        help="hold thresholds to try ('none': no hold-over)",
    )
    parser.add_argument(
        "--variant",
        default=None,
        help="the package variant to play (default: the one the runner would choose on this machine)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    try:
        demo_seed, demo_frames = demo_video_params(ROOT)
        seeds = _seeds(args.seeds, {demo_seed, *UNSEEN_SEEDS})
        scores, holds = _floats(args.score, "--score"), _floats(args.hold, "--hold", allow_none=True)
        if args.frames is not None and args.frames < 1:
            raise UsageError(f"--frames: {args.frames} is not a positive number of frames")
        if not any(h is None or h < s for s in scores for h in holds):
            raise UsageError(f"no pair with hold below score in --score {args.score} / --hold {args.hold}")
        with tempfile.TemporaryDirectory(prefix="lensops-operating-point-") as tmp:
            started = time.monotonic()
            predictor, note = load_predictor(args.model, Path(tmp), args.variant)
            scenes = make_scenes(Path(tmp, "scenes"), seeds[0], seeds[1:], args.frames or demo_frames)
            rows = sweep(predictor, scenes, scores, holds)
    except CLI_ERRORS as exc:
        return print_error(exc)
    print(f"{note}; variant {predictor.variant}")
    print(
        f"validation scenes: seeds {','.join(map(str, seeds))}, {len(scenes[0].truth)} frames each; counts match "
        "VOC-style (benchmarks.ground_truth.counts_within)"
    )
    print(
        f"{'score':>6} {'hold':>5} {'all frames':>10} {'worst':>6}  "
        + " ".join(f"{'seed ' + str(s):>8}" for s in seeds)
    )
    for row in rows:
        hold = "none" if row["hold_threshold"] is None else f"{row['hold_threshold']:.2f}"
        print(
            f"{row['score_threshold']:>6.2f} {hold:>5} {row['share_all']:>10.1%} {row['share_worst']:>6.1%}  "
            + " ".join(f"{row['per_scene'][s]:>8.1%}" for s in seeds)
        )
    chosen = best(rows)
    print(
        f"best: score_threshold={chosen['score_threshold']} hold_threshold={chosen['hold_threshold']} "
        f"({chosen['share_all']:.1%} of all frames, worst scene {chosen['share_worst']:.1%}); "
        f"params.yaml: pipeline.score_threshold / pipeline.hold_threshold; {time.monotonic() - started:.0f} s"
    )
    if args.out:
        write_json(args.out, {"model": note, "seeds": seeds, "rows": rows, "best": chosen})
    return 0


if __name__ == "__main__":
    sys.exit(main())
