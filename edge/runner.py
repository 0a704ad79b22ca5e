"""The device runner: sources -> one inference worker each -> MQTT, the project stream, capture.

One model manager per distinct model name follows the registry alias (and the retained fleet
notice) and hot-swaps between two frames; its deployment events go to `<prefix>/<device>/deployment`.
With `shadow:` a ShadowRunner (edge/shadow.py) is one more sink: a candidate model runs on sampled
frames in its own thread and shadow reports go to `<prefix>/<device>/<source>/shadow`.
A status thread sets the retained `<prefix>/<device>/status` every `status_interval_s` (and at
once after a deployment event): per source its state, model, fps, drops, last error and the
model's recent latency and frame age ({p50, p99, n} ms over the last inferred frames, edge.worker);
the device's `latency_budget_ms` (null without one); the outbox depth; `degraded` while any source
is. `Runner.from_config` builds everything from a `DeviceConfig`; `__init__` takes built parts, so
tests can hand in their own.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Optional

from edge.batching import Batcher, BatchConfig
from edge.capture import Capture
from edge.config import SWITCH_INTERVAL_MS, DeviceConfig
from edge.manager import ModelManager
from edge.mqtt import Publisher
from edge.package.runtimes import default_threads
from edge.redact import redact_all
from edge.registry import open_registry
from edge.rings import in_share
from edge.shadow import ShadowRunner
from edge.sinks import CaptureSink, PublishSink, StreamSink
from edge.scaling import inference_threads, with_decode_threads
from edge.sources import Source
from edge.stream import StreamServer
from edge.worker import InferenceWorker

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 10.0  # on a clean stop, how long the outbox may take to empty
WORKER_STOP_S = 5.0  # on a stop, how long the workers may take to finish their frames


class Runner:
    def __init__(
        self,
        device_id: str,
        sources: list[Source],
        managers: dict[str, ModelManager],
        source_models: dict[str, str],
        publisher: Publisher,
        fleet: Optional[str] = None,
        stream: Optional[StreamServer] = None,
        capture: Optional[Capture] = None,
        status_interval_s: float = 5.0,
        latency_budget_ms: Optional[float] = None,
        shadow: Optional[ShadowRunner] = None,
        batch: Optional[BatchConfig] = None,
        switch_interval_ms: float = SWITCH_INTERVAL_MS,
    ):
        self.device_id, self.fleet = device_id, fleet
        self.latency_budget_ms = latency_budget_ms
        self.sources, self.managers, self.publisher, self.stream = sources, managers, publisher, stream
        self.status_interval_s = status_interval_s
        self.switch_interval_ms = switch_interval_ms
        self._switch_interval_before = sys.getswitchinterval()
        self.publish_sink = PublishSink(publisher, device_id)
        self.capture_sink = CaptureSink(capture) if capture is not None else None
        sinks = [("mqtt", self.publish_sink)]
        if stream is not None:
            sinks.append(("stream", StreamSink(stream.state)))
        if self.capture_sink is not None:
            sinks.append(("capture", self.capture_sink))
        self.shadow = shadow
        if shadow is not None:
            sinks.append(("shadow", shadow))
        # one batch queue per model, shared by the sources that use it
        batch = batch or BatchConfig()
        users = Counter(source_models[s.id] for s in sources)
        self.batchers = {name: Batcher(batch, members=users[name]) for name in managers}
        self.workers = [
            InferenceWorker(s, managers[source_models[s.id]], sinks, self.batchers[source_models[s.id]])
            for s in sources
        ]
        for manager in managers.values():
            manager.on_event = self._on_deployment
        self.stopping = threading.Event()
        self._status_due = threading.Event()
        self._status_thread: Optional[threading.Thread] = None
        self._started = False
        self._stop_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: DeviceConfig, state_dir: Optional[Path] = None) -> "Runner":
        state = Path(state_dir or config.state_path)
        state.mkdir(parents=True, exist_ok=True)
        reg = config.registry
        registry = open_registry(reg)
        cache = reg.cache_dir or state / "models"

        users = Counter(config.model_for(s) for s in config.sources)  # sources per model

        def manager(name: str, alias: str, cache_dir: Path, latency_budget_ms: Optional[float] = None) -> ModelManager:
            return ModelManager(
                registry,
                name,
                alias,
                cache_dir,
                public_key=reg.public_key,
                poll_s=reg.poll_s,
                latency_budget_ms=latency_budget_ms,
                prefer_variant=reg.prefer_variant,
                threads=inference_threads(config.threads, users[name], default_threads()),
                runtime_options=config.runtimes,
                keep=reg.keep,
            )

        managers = {name: manager(name, reg.alias, cache, config.latency_budget_ms) for name in config.models}
        sources = [Source(s, nice=config.capture_nice) for s in with_decode_threads(config.sources, default_threads())]
        publisher = Publisher.from_config(config.mqtt, config.device_id, state)
        stream = StreamServer.from_config(config.stream) if config.stream else None
        capture = Capture.from_config(config.capture) if config.capture else None
        shadow = None
        if config.shadow is not None:
            shadow_cache = config.shadow.cache_dir or state / "shadow-models"  # never the champion's cache
            shadow_managers = {name: manager(name, config.shadow.alias, shadow_cache) for name in config.models}
            shadow = ShadowRunner(shadow_managers, config.shadow, publisher.publish_shadow)
        return cls(
            config.device_id,
            sources,
            managers,
            {s.id: config.model_for(s) for s in config.sources},
            publisher,
            config.fleet,
            stream,
            capture,
            config.status_interval_s,
            config.latency_budget_ms,
            shadow,
            config.batch,
            config.switch_interval_ms,
        )

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> "Runner":
        """Start serving; raises OSError when the stream port cannot be bound (before anything else started).
        Sets the process's thread switch interval to `switch_interval_ms` (stop() puts the one before back)."""
        if self.stream is not None:
            self.stream.start()
        self._switch_interval_before = sys.getswitchinterval()  # put back by stop()
        sys.setswitchinterval(self.switch_interval_ms / 1000)
        self._started = True
        status = self.status()
        self.publisher.publish_status(status)
        if self.stream is not None:
            self.stream.state.set_stats(self.stream_stats(status))
        self.publisher.start()
        if self.fleet:
            self.publisher.subscribe(self.publisher.topics.fleet_deployment(self.fleet), self._on_fleet_notice)
            self.publisher.subscribe(self.publisher.topics.ring_deployments(self.fleet), self._on_ring_notice)
        for manager in self.managers.values():
            manager.start()
        if self.shadow is not None:
            self.shadow.start()
        if self.capture_sink is not None:
            self.capture_sink.start()
        for source in self.sources:
            source.start()
        for worker in self.workers:
            worker.start()
        self._status_due.set()  # the first full status at once
        self._status_thread = threading.Thread(target=self._status_loop, name="device-status", daemon=True)
        self._status_thread.start()
        log.info(
            "runner %s: %d source(s), model(s) %s%s",
            self.device_id,
            len(self.sources),
            ", ".join(self.managers),
            f", page at {self.stream.url}" if self.stream else "",
        )
        return self

    @property
    def done(self) -> bool:
        """Every source ended (replays) and each of its frames went through."""
        return all(worker.done for worker in self.workers)

    def problems(self) -> list[str]:
        """After stop(): what a run that had to finish its work did not do (failed sources, undelivered messages)."""
        found = [
            f"source {source.id} failed: {source.stats()['last_error']}" for source in self.sources if source.failed
        ]
        dead = self.publisher.dead_letters_this_run
        if dead:
            found.append(
                f"{dead} message(s) dead-lettered (too large for the broker, or refused by it; "
                "kept in the outbox's dead_letters table, see the log)"
            )
        if self.publisher.undelivered:
            found.append(
                f"{self.publisher.undelivered} message(s) not delivered (MQTT: "
                f"{self.publisher.last_error or 'no error reported'}); they stay in the outbox "
                f"and go out on the next start"
            )
        return found

    def run(self, max_seconds: Optional[float] = None, exit_when_done: bool = False) -> None:
        """Serve until `stopping` is set, `max_seconds` passed, or (with `exit_when_done`) every source ended
        and the outbox drained; then stop."""
        deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        try:
            while not self.stopping.wait(0.2):
                if deadline is not None and time.monotonic() >= deadline:
                    log.info("runner: --max-seconds %g reached", max_seconds)
                    break
                if exit_when_done and self.done:
                    log.info("runner: every source ended; draining the outbox")
                    self.publisher.wait_until_drained(DRAIN_TIMEOUT_S)
                    break
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop sources and workers, send what the outbox holds (briefly), say offline, close the page."""
        with self._stop_lock:  # run()'s finally and a caller may both stop
            if not self._started:
                return
            self._started = False
        self.stopping.set()
        for source in self.sources:
            source.stop()
        for worker in self.workers:
            worker.request_stop()
        deadline = time.monotonic() + WORKER_STOP_S
        for worker in self.workers:  # one deadline for all: a stuck worker does not add up
            worker.join(deadline)
        if self.capture_sink is not None:
            self.capture_sink.stop()
        if self.shadow is not None:
            self.shadow.stop()  # its last reports go into the outbox before it drains
        for manager in self.managers.values():
            manager.stop(timeout_s=5.0)
        if self._status_thread is not None:
            self._status_due.set()
            self._status_thread.join(5)
        self.publisher.publish_status(self.status())
        self.publisher.stop(drain_timeout_s=DRAIN_TIMEOUT_S)
        if self.stream is not None:
            self.stream.stop()
        sys.setswitchinterval(self._switch_interval_before)
        log.info("runner %s stopped", self.device_id)

    # -- events and status ---------------------------------------------------------------------

    def _on_deployment(self, event: dict) -> None:
        self.publisher.publish_deployment(event)
        self._status_due.set()

    def _on_fleet_notice(self, _topic: str, payload: bytes) -> None:
        """The retained fleet deployment notice: the manager of that model polls at once (runs on the MQTT thread)."""
        notice = _notice_dict(payload)
        for manager in self.managers.values():
            if notice and manager.notify(notice):
                log.info(
                    "fleet notice: %s %s version %s", notice.get("model"), notice.get("alias"), notice.get("version")
                )
        if notice and self.shadow is not None:
            self.shadow.notify(notice)

    def _on_ring_notice(self, topic: str, payload: bytes) -> None:
        """A retained rollout ring notice: when its share holds this device's place (edge.rings), the manager
        of that model follows the ring's alias and polls at once (runs on the MQTT thread)."""
        notice = _notice_dict(payload)
        share = notice.get("share") if notice else None
        numbers = isinstance(share, list) and len(share) == 2 and all(isinstance(v, (int, float)) for v in share)
        if not (numbers and in_share(self.device_id, share)):
            return
        for manager in self.managers.values():
            if not manager.follow_ring(notice):
                continue
            log.info(
                "ring %s notice (%s): %s %s version %s",
                notice.get("ring"),
                topic,
                notice.get("model"),
                notice.get("alias"),
                notice.get("version"),
            )
            if self.shadow is not None:  # serving a ring's candidate: the champion (base alias) is the shadow
                ring = manager.alias != manager.base_alias
                self.shadow.follow(manager.base_alias if ring else self.shadow.config.alias, manager.model)

    def _status_loop(self) -> None:
        while not self.stopping.is_set():
            self._status_due.wait(self.status_interval_s)
            self._status_due.clear()
            try:
                status = self.status()
                self.publisher.publish_status(status)
                if self.stream is not None:
                    self.stream.state.set_stats(self.stream_stats(status))
            except Exception:  # the status must never take the runner down
                log.exception("status update failed")

    def status(self) -> dict:
        """The runner's part of the retained status (the publisher adds schema, device, outbox, ts)."""
        sources = {}
        for worker in self.workers:
            manager, stats, work = worker.manager, worker.source.stats(), worker.stats()
            predictor = manager.current()
            state = stats["state"]
            problem = None
            if predictor is None:
                problem = f"no model to serve ({manager.last_error or 'waiting for ' + manager.model})"
            elif work["failing"]:
                problem = work["last_error"]
            if problem and state in ("starting", "ok"):
                state = "degraded"
            sources[worker.id] = {
                "state": state,
                "model": predictor.model if predictor else None,
                "fps": stats["fps"],
                "frames": stats["frames"],
                "drops": stats["drops"],
                "reconnects": stats["reconnects"],
                "inferred": work["inferred"],
                "failed": work["failed"],
                "published": self.publish_sink.published.get(worker.id, 0),
                "last_seq": self.publish_sink.last_seq.get(worker.id),
                "last_error": problem or stats["last_error"] or work["last_error"],
                "latency_ms": work["latency_ms"],
                "frame_age_ms": work["frame_age_ms"],
            }
            if self.shadow is not None:
                sources[worker.id]["shadow"] = self.shadow.status(worker.id)
        models = {name: manager.status() for name, manager in self.managers.items()}
        errors = [s["last_error"] for s in sources.values() if s["state"] in ("degraded", "failed") and s["last_error"]]
        errors += [m["last_error"] for m in models.values() if m["last_error"]]
        mqtt = self.publisher.stats()
        if mqtt.last_error:
            errors.append(f"mqtt: {mqtt.last_error}")
        if mqtt.client_id_conflict:
            errors.insert(0, f"mqtt: {mqtt.client_id_conflict}")
        degraded = any(s["state"] in ("degraded", "failed") for s in sources.values()) or bool(mqtt.client_id_conflict)
        status = {
            "state": "degraded" if degraded else "online",
            "sources": sources,
            "models": models,
            "last_error": errors[0] if errors else None,
            "latency_budget_ms": self.latency_budget_ms,
        }
        if mqtt.client_id_conflict:
            status["client_id_conflict"] = mqtt.client_id_conflict
        if self.fleet:
            status["fleet"] = self.fleet
        if self.capture_sink is not None:
            status["capture"] = self.capture_sink.stats()
        if self.shadow is not None:  # the candidate's problems never make the device degraded
            status["shadow"] = {name: manager.status() for name, manager in self.shadow.managers.items()}
        return redact_all(status)  # what the page, /healthz and /metrics show too

    def stream_stats(self, status: dict) -> dict:
        """What the page and /metrics show, from a status."""
        mqtt = self.publisher.stats()
        return {
            "device": self.device_id,
            "fleet": self.fleet,
            "sources": status["sources"],
            "outbox_depth": mqtt.outbox_depth,
            "state": status["state"],
            "mqtt_connected": mqtt.connected,
            "mqtt_dropped": mqtt.dropped,
            "mqtt_dead_letters": mqtt.dead_letters,
            "client_id_conflict": status.get("client_id_conflict"),
            "last_error": status["last_error"],
            "latency_budget_ms": status.get("latency_budget_ms"),
        }


def _notice_dict(payload: bytes) -> Optional[dict]:
    """A notice's JSON object, or None (logged) when it is not one; an empty payload (a cleared retained
    notice) is None quietly."""
    if not payload:
        return None
    try:
        notice = json.loads(payload)
    except ValueError:
        log.warning("deployment notice is not JSON: %r", payload[:200])
        return None
    return notice if isinstance(notice, dict) else None
