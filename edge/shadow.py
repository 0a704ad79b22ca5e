"""Shadow mode: run a candidate model beside the champion on a sampled share of live frames and report how they
compare, without ever publishing the candidate's results as inference.

```yaml
shadow: {alias: candidate, rate: 0.1, report_s: 30, queue: 4}
```

The runner adds a `ShadowRunner` as one more sink of every source's delivery thread. Of each source's frames it
samples exactly `rate` (deterministically, by the frame's position in the source: frames 9, 19, 29, ... at
0.1) and hands the frame with the champion's `Result` to ONE shadow thread through a queue of `queue` frames;
when the queue is full the frame is skipped and counted, so the champion never waits for the candidate. The
shadow thread runs the candidate (its own `ModelManager` per model for `alias`, with its own package cache,
default `<state_dir>/shadow-models`) on the same frame and compares (edge/shadow_metrics.py). A candidate that
is missing, fails staging, raises or is slow shows up only in the report's `failed`, `error` and latency. Frames
where the candidate version equals the champion's are not compared (nothing to compare).

Every `report_s` seconds per source a `lensops.shadow/1` report goes out with the figures of the window since the
previous report and the total since the current (champion version, candidate version) pair began; a change of
either version sends the old pair's last report and starts afresh. The candidate manager's deployment events are
not published on the device's deployment topic (they would read as the champion changing); they are logged, and
the candidate's problems go in the report's `error`.

`follow(alias)` makes the candidate managers follow another alias at run time (a rollout controller on a device
that now serves the candidate can shadow the old champion, e.g. `follow("production")`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional

from pydantic import Field

from common.models import StrictModel
from edge.manager import ModelManager
from edge.mqtt.payloads import utc_timestamp
from edge.shadow_metrics import Figures, sampled
from edge.worker import Inferred

log = logging.getLogger(__name__)

TICK_S = 0.2  # how often the shadow thread looks for due reports when no frame comes
_STOP = object()

ReportSink = Callable[[str, dict], None]  # (source id, report without schema/device) -> publish


class ShadowConfig(StrictModel):
    """Run a candidate model beside the champion on a share of the frames and publish shadow reports."""

    alias: str = Field("candidate", min_length=1, description="registry alias of the candidate (same model name)")
    rate: float = Field(0.1, gt=0, le=1, description="share of each source's frames run on the candidate too")
    report_s: float = Field(30.0, gt=0, description="seconds between shadow reports per source")
    queue: int = Field(4, ge=1, le=1000, description="sampled frames waiting for the candidate; more are skipped")
    cache_dir: Optional[Path] = Field(
        None, description="the candidate's package cache; default <state_dir>/shadow-models"
    )


class _Pair:
    """One source's figures for one (champion, candidate) pair."""

    def __init__(self, model: str, task: str, champion: dict, candidate: Optional[dict], now: float):
        self.model, self.task, self.champion, self.candidate = model, task, champion, candidate
        self.window, self.total = Figures(), Figures()
        self.since = utc_timestamp()
        self.last_report = now
        self.error: Optional[str] = None

    def same(self, champion: dict, candidate: Optional[dict]) -> bool:
        cand = candidate["version"] if candidate else None
        mine = self.candidate["version"] if self.candidate else None
        return self.champion["version"] == champion["version"] and cand == mine


class ShadowRunner:
    """The shadow sink and thread of one runner. `managers`: model name -> the candidate's ModelManager."""

    def __init__(
        self,
        managers: Dict[str, ModelManager],
        config: ShadowConfig,
        publish: ReportSink,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.managers, self.config, self.publish, self.clock = managers, config, publish, clock
        self.alias = config.alias
        self._queue: "queue.Queue[object]" = queue.Queue(config.queue)
        self._lock = threading.Lock()
        self._seen: Dict[str, int] = {}  # source -> frames offered (the sampling position)
        self._skipped: Dict[str, int] = {}  # source -> skipped since the shadow thread last took them
        self._pairs: Dict[str, _Pair] = {}  # source -> current pair (shadow thread only)
        self._status: Dict[str, dict] = {}  # source -> small status dict (replaced whole)
        self._thread: Optional[threading.Thread] = None
        self._problems: Dict[str, str] = {}  # model -> why its candidate was last rejected or rolled back
        for manager in managers.values():
            manager.on_event = self._on_event

    # -- what the runner calls ------------------------------------------------------------------

    def __call__(self, inferred: Inferred) -> None:
        """The sink: sample the frame, hand it over without waiting (skip and count when the queue is full)."""
        source = inferred.frame.source_id
        with self._lock:
            n = self._seen.get(source, 0)
            self._seen[source] = n + 1
        if not sampled(n, self.config.rate):
            return
        try:
            self._queue.put_nowait(inferred)
        except queue.Full:
            with self._lock:
                self._skipped[source] = self._skipped.get(source, 0) + 1

    def follow(self, alias: str, model: Optional[str] = None) -> None:
        """Follow `alias` as the candidate from now on (the candidate manager of `model`, or of every model,
        polls the registry at once)."""
        if model is None or set(self.managers) == {model}:
            self.alias = alias
        for name, manager in self.managers.items():
            if model is None or name == model:
                manager.follow(alias)

    def notify(self, notice: dict) -> bool:
        """A fleet deployment notice: the candidate manager of that model polls when it names our alias."""
        return any(manager.notify(notice) for manager in self.managers.values())

    def status(self, source: str) -> Optional[dict]:
        """{alias, candidate (version or None), frames, skipped, failed, agreement} of the current pair's total,
        None before the source's first sampled frame."""
        return self._status.get(source)

    def start(self) -> "ShadowRunner":
        for manager in self.managers.values():
            manager.start()
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Compare the frames still queued (at most `queue`), send the last reports, stop the candidate managers;
        past `timeout_s` the thread is left to end on its own (a daemon)."""
        if self._thread is not None:
            try:
                self._queue.put(_STOP, timeout=timeout_s)
            except queue.Full:
                pass
            self._thread.join(timeout_s)
        for manager in self.managers.values():
            manager.stop(timeout_s=timeout_s)

    # -- the shadow thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=min(TICK_S, self.config.report_s))
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            try:
                if item is not None:
                    self._compare(item)
                self._report_due(final=False)
            except Exception:  # a bug here must not stop the shadow thread (and never touches the champion)
                log.exception("shadow comparison failed")
        try:
            self._report_due(final=True)
        except Exception:
            log.exception("last shadow reports failed")

    def _compare(self, inferred: Inferred) -> None:
        source, result = inferred.frame.source_id, inferred.result
        champion = {"version": result.model["version"], "variant": result.model["variant"]}
        manager = self.managers.get(result.model["name"])
        predictor = manager.current() if manager is not None else None
        candidate = {"version": predictor.version, "variant": predictor.variant} if predictor else None
        pair = self._pair(source, result.model["name"], inferred.task, champion, candidate)
        if predictor is None:
            pair.window.failed += 1
            pair.total.failed += 1
            pair.error = self._missing(result.model["name"])
        elif predictor.version != champion["version"]:
            try:
                shadow = predictor.predict(inferred.frame.image)
            except Exception as exc:  # ModelFailure or anything else: the candidate's problem only
                pair.window.failed += 1
                pair.total.failed += 1
                pair.error = f"candidate {predictor.version} failed: {type(exc).__name__}: {exc}"
            else:
                args = (inferred.task, result.predictions, shadow.predictions)
                latencies = (result.latency_ms["total"], shadow.latency_ms["total"])
                pair.window.add(*args, *latencies)
                pair.total.add(*args, *latencies)
        self._note_status(source, pair)

    def _pair(self, source: str, model: str, task: str, champion: dict, candidate: Optional[dict]) -> _Pair:
        pair = self._pairs.get(source)
        if pair is not None and pair.same(champion, candidate):
            return pair
        if pair is not None:
            self._send(source, pair)  # the old pair's last report
        pair = self._pairs[source] = _Pair(model, task, champion, candidate, self.clock())
        return pair

    def _report_due(self, final: bool) -> None:
        with self._lock:  # skips of a source without a pair yet wait for its first compared frame
            skipped = {source: self._skipped.pop(source) for source in list(self._skipped) if source in self._pairs}
        now = self.clock()
        for source, pair in self._pairs.items():
            count = skipped.get(source, 0)
            pair.window.skipped += count
            pair.total.skipped += count
            if final or now - pair.last_report >= self.config.report_s:
                if not final or not pair.window.empty:
                    self._send(source, pair)
                pair.last_report = now
            self._note_status(source, pair)

    def _send(self, source: str, pair: _Pair) -> None:
        if pair.error is None and pair.candidate is None:
            pair.error = self._missing(pair.model)
        report = {
            "source": source,
            "model": pair.model,
            "task": pair.task,
            "alias": self.alias,
            "rate": self.config.rate,
            "champion": pair.champion,
            "candidate": pair.candidate,
            "window": pair.window.summary(),
            "total": pair.total.summary(),
            "since": pair.since,
            "error": pair.error,
            "ts": utc_timestamp(),
        }
        pair.window, pair.error = Figures(), None
        try:
            self.publish(source, report)
        except Exception:  # an invalid report or a full disk: logged, the next one tries again
            log.exception("shadow report for %s not published", source)

    def _note_status(self, source: str, pair: _Pair) -> None:
        self._status[source] = {
            "alias": self.alias,
            "candidate": pair.candidate["version"] if pair.candidate else None,
            "frames": pair.total.frames,
            "skipped": pair.total.skipped,
            "failed": pair.total.failed,
            "agreement": pair.total.agreement,
        }

    def _missing(self, model: str) -> str:
        """Why there is no candidate model for `model`."""
        manager = self.managers.get(model)
        why = self._problems.get(model) or (manager.last_error if manager is not None else None)
        return f"no candidate model for {model}@{self.alias}" + (f": {why}" if why else " (not loaded yet)")

    def _on_event(self, event: dict) -> None:
        """The candidate manager's deployment events: logged, and a rejection kept for the reports' `error`; never
        published as deployment events (see the module docstring)."""
        model, state = str(event.get("model")), event.get("state")
        if state in ("rejected", "rolled_back"):
            self._problems[model] = f"version {event.get('version')} {state}: {event.get('reason')}"
        elif state == "activated":
            self._problems.pop(model, None)
        log.info(
            "shadow candidate %s %s: %s%s",
            event.get("model"),
            event.get("version"),
            event.get("state"),
            f" ({event['reason']})" if event.get("reason") else "",
        )
