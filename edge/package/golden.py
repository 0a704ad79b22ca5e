"""Golden samples: frames stored in the package with what each variant produced for them at build time.

A device runs them after loading a variant; a variant that no longer reproduces its own outputs
(corrupt weights, a runtime that computes differently) is refused before it serves a frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2

from edge.messages import Prediction
from edge.package.codec import decode, preprocess
from edge.package.manifest import Manifest, PackageError
from edge.package.runtimes import Session

SCORE_TOL = 0.05
BOX_TOL = 0.03


def stored(predictions: list[dict]) -> list[Prediction]:
    """Golden predictions as a package stores them ({label, score[, box]}), read as they are: a package built
    before predictions were checked on construction still loads (its figures are compared, not published)."""
    return [Prediction.model_construct(**p) for p in predictions]


def compare(expected: list[Prediction], actual: list[Prediction], threshold: float) -> str | None:
    """None when two prediction lists agree within tolerance, else what differs."""
    unmatched = list(actual)
    for want in expected:
        match = None
        for got in unmatched:
            if got.label != want.label or abs(got.score - want.score) > SCORE_TOL:
                continue
            if want.box is not None and (
                got.box is None or max(abs(x - y) for x, y in zip(got.box, want.box)) > BOX_TOL
            ):
                continue
            match = got
            break
        if match is not None:
            unmatched.remove(match)
        elif want.score > threshold + SCORE_TOL:
            return f"expected {want.label} {want.score:.3f} {want.box or ''} not produced"
    for got in unmatched:
        if got.score > threshold + SCORE_TOL:
            return f"unexpected {got.label} {got.score:.3f} {got.box or ''}"
    return None


def run_sample(package_dir: Path, manifest: Manifest, session: Session, image: str) -> list[Prediction]:
    frame = cv2.imread(str(Path(package_dir) / image), cv2.IMREAD_COLOR)
    if frame is None:
        raise PackageError(f"{Path(package_dir) / image}: golden sample is not a readable image")
    try:
        outputs = session.run(preprocess([frame], manifest.input))
    except Exception as exc:  # a runtime that cannot run the sample is a package fault
        raise PackageError(
            f"{image}: variant {session.variant.id} failed on its golden sample ({type(exc).__name__}: {exc})"
        ) from None
    return decode(outputs, list(manifest.labels), manifest.output)[0]


def check_samples(package_dir: Path, manifest: Manifest, session: Session) -> int:
    """Run every golden sample through `session`; PackageError naming the first that disagrees."""
    variant = session.variant.id
    threshold = manifest.output.score_threshold if manifest.task == "detection" else 0.0
    for sample in manifest.samples:
        expected = json.loads((Path(package_dir) / sample.expected).read_text())
        want = stored(expected["variants"].get(variant, expected["reference"]))
        got = run_sample(package_dir, manifest, session, sample.image)
        problem = compare(want, got, threshold)
        if problem:
            raise PackageError(f"{sample.image}: variant {variant} disagrees with its golden output: {problem}")
    return len(manifest.samples)
