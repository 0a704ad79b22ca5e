"""Batching across sources on real tiny packages: a batched frame gets the result it gets alone (with its own
hold-over), only frames of one loaded model share a batch, a failing batch fails each of its frames, and a
frame whose own outputs are not finite fails alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge.batching import Batcher, BatchConfig
from edge.package import verify_dir
from edge.predictor import ModelFailure, Predictor
from tests.edge.packages import tiny_packages  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow  # the packages come from a real (tiny) training run

WAIT_S = 30.0
LONG_DEADLINE = BatchConfig(max_size=8, deadline_ms=1000)  # a leader waits for every member: batches are certain


def frames(n: int, height: int = 120, width: int = 200) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


def concurrently(batcher: Batcher, calls: list[tuple]) -> list:
    """Run batcher.predict(*call) for each call on its own thread (as each source's inference thread does);
    each call's Result, or the exception it raised."""
    out: list = [None] * len(calls)

    def one(i: int) -> None:
        try:
            out[i] = batcher.predict(*calls[i])
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(t.is_alive() for t in threads), "a batched call never returned"
    return out


def same_predictions(a, b) -> None:
    assert [p.label for p in a] == [p.label for p in b], (a, b)
    for p, q in zip(a, b):
        assert p.score == pytest.approx(q.score, abs=1e-4)
        if p.box is not None:
            assert p.box == pytest.approx(q.box, abs=1e-4)


def test_batched_frames_get_what_they_get_alone_with_their_own_hold_over(tiny_packages):
    # given the tiny detector reading boxes at 0.5 and holding boxes from 0.02 on a stream, and four sources
    package = tiny_packages.detector
    manifest = verify_dir(package.folder)
    held = manifest.model_copy(update={"output": manifest.output.model_copy(update={"hold_threshold": 0.02})})
    predictor = Predictor.load(package.folder, held)
    images = frames(4)
    weak = Predictor.load(package.folder, manifest, score_threshold=0.02).predict(images[1]).predictions
    assert weak, "a 0.02 threshold yields boxes from the barely trained SSD"
    previous = [None, weak[:1], None, weak]
    alone = [predictor.predict(image, prev) for image, prev in zip(images, previous)]
    # when their four frames come at once, source 1 and 3 with the boxes of their last frame
    batcher = Batcher(LONG_DEADLINE, members=4)
    batched = concurrently(batcher, [(predictor, image, prev) for image, prev in zip(images, previous)])
    # then they ran as one batch, and each frame got the predictions, counts and model it gets alone
    assert batcher.stats() == {"batches": 1, "frames": 4, "mean": 4.0}
    for got, want in zip(batched, alone):
        assert not isinstance(got, Exception), got
        same_predictions(got.predictions, want.predictions)
        assert got.counts == want.counts and got.model == want.model
        assert got.latency_ms["total"] >= got.latency_ms["inference"] > 0, got.latency_ms
    assert len(batched[1].predictions) == 1, "source 1 kept exactly the weak box its last frame had"
    assert batched[1].predictions[0].box == pytest.approx(weak[0].box, abs=1e-4)


def test_only_frames_of_the_same_loaded_model_share_a_batch(tiny_packages):
    # given two loaded versions of the classifier (a hot swap in progress: some sources still on the old one)
    old = Predictor.load(tiny_packages.classifier.folder, verify_dir(tiny_packages.classifier.folder), version="1")
    new = Predictor.load(tiny_packages.classifier_b.folder, verify_dir(tiny_packages.classifier_b.folder), version="2")
    images = frames(4)
    # when four sources' frames come at once, two for each
    batcher = Batcher(LONG_DEADLINE, members=4)
    results = concurrently(batcher, [(p, image, None) for p, image in zip((old, new, old, new), images)])
    # then each version ran its own batch of two, and each frame names the version that inferred it
    assert batcher.stats() == {"batches": 2, "frames": 4, "mean": 2.0}
    assert [r.model["version"] for r in results] == ["1", "2", "1", "2"]


def test_one_source_or_max_size_one_is_never_batched(tiny_packages):
    package = tiny_packages.classifier
    predictor = Predictor.load(package.folder, verify_dir(package.folder))
    for batcher in (Batcher(LONG_DEADLINE, members=1), Batcher(BatchConfig(max_size=1), members=4)):
        result = batcher.predict(predictor, frames(1)[0], None)
        assert result.predictions and batcher.stats()["batches"] == 0, "predicted alone, no batch queue"


class FailingSession:
    """The real session, raising like a runtime does (always when `fail`; with `fail_batches` only on batches of
    more than one frame), or with NaN in the rows of all-black frames."""

    def __init__(self, inner, fail: bool, fail_batches: bool = False):
        self.inner, self.fail, self.fail_batches = inner, fail, fail_batches
        self.variant = inner.variant

    def run(self, batch):
        if self.fail or (self.fail_batches and len(batch) > 1):
            raise RuntimeError("ONNXRuntimeError: out of memory")
        outputs = [np.array(o) for o in self.inner.run(batch)]
        black = np.ptp(batch.reshape(len(batch), 3, -1), axis=2).max(axis=1) == 0  # each channel one value
        for output in outputs:
            output[black] = np.nan
        return outputs


def test_a_failing_batch_fails_each_frame_and_a_non_finite_frame_fails_alone(tiny_packages):
    package = tiny_packages.classifier
    images = frames(3)
    images[1] = np.zeros_like(images[1])  # this frame's outputs come back NaN
    # given a session that raises on batches only: each frame, run again alone, gets its result
    predictor = Predictor.load(package.folder, verify_dir(package.folder))
    predictor.session = FailingSession(predictor.session, fail=False, fail_batches=True)
    images_ok = frames(3)
    results = concurrently(Batcher(LONG_DEADLINE, members=3), [(predictor, image, None) for image in images_ok])
    assert [type(r).__name__ for r in results] == ["Result"] * 3, results
    # given a session that always raises: every frame of the batch gets the ModelFailure (each counts towards
    # rollback, as each would alone)
    predictor.session = FailingSession(predictor.session.inner, fail=True)
    results = concurrently(Batcher(LONG_DEADLINE, members=3), [(predictor, image, None) for image in images])
    assert all(isinstance(r, ModelFailure) and "out of memory" in str(r) for r in results), results
    # given a session whose outputs for one frame are NaN: that frame fails, the other two get their results
    predictor.session = FailingSession(predictor.session.inner, fail=False)
    batcher = Batcher(LONG_DEADLINE, members=3)
    results = concurrently(batcher, [(predictor, image, None) for image in images])
    assert isinstance(results[1], ModelFailure) and "NaN" in str(results[1]), results[1]
    assert [type(r).__name__ for r in (results[0], results[2])] == ["Result", "Result"], results
    assert batcher.stats()["batches"] == 1


def test_a_graph_that_fixes_the_batch_gets_batches_no_larger(tiny_packages):
    # given a model whose session takes one frame per call (an ONNX graph with input [1, 3, H, W])
    package = tiny_packages.classifier
    predictor = Predictor.load(package.folder, verify_dir(package.folder))
    assert predictor.max_batch is None, "the pipeline's ONNX graphs take any batch"
    predictor.session.max_batch = 1
    alone = [predictor.predict(image) for image in frames(3)]
    # when three sources' frames come at once to a batcher that would take eight
    batcher = Batcher(LONG_DEADLINE, members=3)
    results = concurrently(batcher, [(predictor, image, None) for image in frames(3)])
    # then each ran as a batch of one (never a batch the session refuses), each with its own result
    assert batcher.stats() == {"batches": 3, "frames": 3, "mean": 1.0}
    for got, want in zip(results, alone):
        assert not isinstance(got, Exception), got
        same_predictions(got.predictions, want.predictions)


def test_a_source_that_left_is_not_waited_for(tiny_packages):
    # given three sources on a model whose batches wait up to a second for every source, and one that ended
    package = tiny_packages.classifier
    predictor = Predictor.load(package.folder, verify_dir(package.folder))
    batcher = Batcher(BatchConfig(max_size=8, deadline_ms=1000), members=3)
    batcher.leave()
    assert batcher.members == 2 and batcher.batching
    # when the two left send a frame each: they are every member, so the batch runs without waiting
    results = concurrently(batcher, [(predictor, image, None) for image in frames(2)])
    assert [type(r).__name__ for r in results] == ["Result", "Result"]
    assert batcher.stats() == {"batches": 1, "frames": 2, "mean": 2.0}
