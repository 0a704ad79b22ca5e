"""The model manager: follow a registry alias and hot-swap the model a device serves, safely.

A new version (named by the alias or a retained fleet notice) goes downloading -> verifying
(archive sha256 = the registry's, signature, safe extraction, file hashes) -> staging (load,
warm-up, golden samples) -> activated: one attribute assignment between two frames. Failures are
`rejected` with the reason while the current model keeps serving. During a probation after a swap,
repeated failures or latency over budget roll back (`rolled_back`) to the previous model, still
in memory. A bad version is not tried again until the alias moves. The last-known-good package
stays on disk (package_cache.py) for booting while the registry is unreachable. Events are dicts
in the `lensops.deployment/1` shape (the publisher adds schema and device).

A step that fails for a passing reason (the registry unreachable or missing the alias, a failed
download, an error that is not the package's fault: "will retry") is tried again after about 1, 2,
4 ... seconds (each wait between half and all of that, so devices that failed together do not retry
together), capped at `poll_s`, rather than at the next poll; a fleet notice that step was following
is kept for it. The first step that ends without such a failure goes back to polling every `poll_s`.
A package that fails verification or staging is not tried again until the alias moves.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from edge.mqtt.payloads import utc_timestamp
from edge.package import PackageError, sha256_file, verify_dir
from edge.package.runtimes import RuntimeOptions
from edge.package_cache import CachedPackage, PackageCache
from edge.predictor import Predictor
from edge.registry import Registry, RegistryError, Resolved
from edge.rings import follows

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0  # the first wait after a step failed for a passing reason; doubled up to poll_s
RETRY_JITTER = 0.5  # each such wait is between this share and all of it

EventSink = Callable[[dict], None]


@dataclass(frozen=True)
class RollbackPolicy:
    failure_limit: int = 3  # consecutive failed frames (exceptions, NaN outputs)
    slow_frames: int = 10  # consecutive frames over the latency budget
    probation_frames: int = 1000  # good frames after a swap before the previous model is released


@dataclass(frozen=True)
class Active:
    predictor: Predictor
    entry: CachedPackage


class ModelManager:
    def __init__(
        self,
        registry: Registry,
        model: str,
        alias: str,
        cache_dir: Path,
        public_key: Optional[Path] = None,
        poll_s: float = 30.0,
        latency_budget_ms: Optional[float] = None,
        on_event: Optional[EventSink] = None,
        prefer_variant: Optional[str] = None,
        threads: Optional[int] = None,
        keep: int = 1,
        policy: RollbackPolicy = RollbackPolicy(),
        runtime_options: Optional[Mapping[str, RuntimeOptions]] = None,
    ):
        self.registry, self.model, self.alias = registry, model, alias
        self.base_alias = alias  # the configured alias; `alias` is a ring alias while a ring notice says so
        self.public_key, self.poll_s, self.latency_budget_ms = public_key, poll_s, latency_budget_ms
        self.on_event, self.prefer_variant, self.threads, self.policy = on_event, prefer_variant, threads, policy
        self.runtime_options = dict(runtime_options or {})  # runtime key -> options replacing its defaults
        self.cache = PackageCache(Path(cache_dir), model, keep)
        self.last_error: Optional[str] = None
        self.ready = threading.Event()  # set once a model serves
        self._lock = threading.Lock()  # guards the swap, the rollback counters, `_bad` and `_notice`
        self._active: Optional[Active] = None
        self._previous: Optional[Active] = None
        self._bad: dict[str, str] = dict(self.cache.bad)  # version -> why; kept until the alias moves
        self._failures = self._slow = self._frames = 0
        self._notice: Optional[Resolved] = None  # guarded by _lock (set by the MQTT thread)
        self._notice_ts: Optional[str] = None  # the `ts` of the newest notice taken
        self._wake, self._stop = threading.Event(), threading.Event()
        self._retry = False  # the last step failed for a passing reason: try again before poll_s
        self._thread: Optional[threading.Thread] = None

    # -- what the runner calls ----------------------------------------------------------------

    def current(self) -> Optional[Predictor]:
        """The predictor to use for the next frame (None until one is active). Never blocks."""
        active = self._active
        return active.predictor if active else None

    def report_failure(self, reason: object, predictor: Optional[Predictor] = None) -> None:
        """A frame failed on the current model (pass the predictor used, so a late report after a swap is ignored)."""
        with self._lock:
            if not self._counts(predictor):
                return
            self._failures += 1
            self.last_error = str(reason)
            if self._previous is None or self._failures < self.policy.failure_limit:
                return
            rolled = self._roll_back(f"{self._failures} consecutive failures, last: {reason}")
        self._emit(**rolled)

    def report_latency(self, ms: float, predictor: Optional[Predictor] = None) -> None:
        """A frame succeeded in `ms` milliseconds on the current model."""
        with self._lock:
            if not self._counts(predictor):
                return
            self._failures = 0
            self._frames += 1
            over = self.latency_budget_ms is not None and ms > self.latency_budget_ms
            self._slow = self._slow + 1 if over else 0
            if self._previous is None:
                return
            if self._slow < self.policy.slow_frames:
                if self._frames >= self.policy.probation_frames:
                    self._previous = None  # passed probation: release the old model's memory
                return
            rolled = self._roll_back(
                f"latency {ms:.1f} ms over the {self.latency_budget_ms:g} ms budget for {self._slow} consecutive frames"
            )
        self._emit(**rolled)

    def notify(self, notice: dict) -> bool:
        """A fleet deployment notice ({model, alias, version, package_uri, sha256}) for the alias this manager
        follows now: poll now. False if not ours."""
        if notice.get("model") != self.model or notice.get("alias", self.alias) != self.alias:
            return False
        return self._pending(notice)

    def follow_ring(self, notice: dict) -> bool:
        """A ring notice for this device's ring: from now on follow its alias (the configured alias, or one of
        its ring aliases `<alias>-ring-<n>`; edge.rings.follows) and poll now. False if not ours, incomplete,
        or older than a notice already taken."""
        alias = notice.get("alias")
        if notice.get("model") != self.model or not isinstance(alias, str) or not follows(self.base_alias, alias):
            return False
        if not self._complete(notice) or self._older(notice):
            return False
        if alias != self.alias:
            log.info("%s: following %s (ring %s) instead of %s", self.model, alias, notice.get("ring"), self.alias)
            self.alias = alias
        return self._pending(notice)

    @staticmethod
    def _complete(notice: dict) -> bool:
        missing = [k for k in ("version", "package_uri", "sha256") if not isinstance(notice.get(k), str)]
        if missing:
            log.warning("deployment notice without %s ignored: %s", ", ".join(missing), notice)
        return not missing

    def _older(self, notice: dict) -> bool:
        """Whether `notice` is older (by its `ts`) than the last one taken: retained notices arrive in any order
        after a reconnect, and the newest says what the fleet should run."""
        ts = notice.get("ts")
        return isinstance(ts, str) and self._notice_ts is not None and ts < self._notice_ts

    def _pending(self, notice: dict) -> bool:
        """Keep the notice (followed when the registry is unreachable) and wake the manager thread."""
        if not self._complete(notice) or self._older(notice):
            return False
        if isinstance(notice.get("ts"), str):
            self._notice_ts = notice["ts"]
        active = self._active
        if active is not None and active.entry == CachedPackage(str(notice["version"]), str(notice["sha256"])):
            return True  # already serving it (a retained notice sent again after a reconnect): no registry call
        resolved = Resolved(
            self.model, self.alias, str(notice["version"]), str(notice["package_uri"]), str(notice["sha256"])
        )
        with self._lock:
            self._notice = resolved
        self._wake.set()
        return True

    def follow(self, alias: str) -> None:
        """Follow `alias` from now on: the manager thread resolves it at once (a pending fleet notice for the old
        alias is dropped). The model serving now keeps serving until the new alias's version is activated."""
        self.alias = alias
        with self._lock:
            self._notice = None
        self._wake.set()

    def status(self) -> dict:
        """For the retained device status."""
        active, previous = self._active, self._previous
        with self._lock:
            bad = sorted(self._bad)
        return {
            "model": self.model,
            "alias": self.alias,
            "version": active.entry.version if active else None,
            "variant": active.predictor.variant if active else None,
            "previous": previous.entry.version if previous else None,
            "bad": bad,
            "last_error": self.last_error,
        }

    def start(self) -> "ModelManager":
        """Boot (cache or registry) and poll in a background thread."""
        self._thread = threading.Thread(target=self._run, name=f"model-manager-{self.model}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- the manager thread -------------------------------------------------------------------

    def _run(self) -> None:
        self._guarded(self.boot)
        retry_s = RETRY_FIRST_S
        while not self._stop.is_set():
            if self._retry:
                wait_s, retry_s = min(retry_s, self.poll_s) * random.uniform(RETRY_JITTER, 1.0), retry_s * 2
            else:
                wait_s, retry_s = self.poll_s, RETRY_FIRST_S
            self._wake.wait(wait_s)
            self._wake.clear()
            if not self._stop.is_set():
                self._guarded(self.poll_once)

    def _guarded(self, step: Callable[[], object]) -> None:
        self._retry = False
        try:
            step()
        except Exception as exc:  # a bug here must not stop the polling (the current model keeps serving)
            log.exception("model manager %s: %s failed", self.model, step.__name__)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._retry = True

    def boot(self) -> Optional[dict]:
        """Serve the cached last-known-good at once where the alias names something else (or the
        registry is unreachable), then deploy what the alias names. Returns the last event."""
        try:
            resolved = self.registry.resolve(self.model, self.alias)
        except RegistryError as exc:
            self.last_error, self._retry = str(exc), True
            event = self._boot_from_cache(str(exc))
            self._persist()
            return event
        cached = self.cache.current
        if cached and cached != CachedPackage(resolved.version, resolved.sha256):
            self._boot_from_cache(f"{self.alias} names version {resolved.version}, which is fetched next")
        event = self._consider(resolved)
        self._persist()
        return event

    def poll_once(self) -> Optional[dict]:
        """Resolve the alias (or follow a pending fleet notice when the registry is unreachable) and deploy
        a new version; returns the last event, None when nothing changed."""
        with self._lock:
            notice, self._notice = self._notice, None
        try:
            resolved = self.registry.resolve(self.model, self.alias)
            self.last_error = None
        except RegistryError as exc:
            self.last_error, self._retry = str(exc), True
            log.warning("%s", exc)
            resolved = notice
        event = self._consider(resolved) if resolved else None
        with self._lock:
            # the step's retry follows the same notice, unless a newer one came or the alias moved meanwhile
            if self._retry and notice is not None and self._notice is None and notice.alias == self.alias:
                self._notice = notice
        self._persist()
        return event

    def _consider(self, resolved: Resolved) -> Optional[dict]:
        entry = CachedPackage(resolved.version, resolved.sha256)
        with self._lock:
            if resolved.version in self._bad:
                return None  # rejected or rolled back; tried again once the alias has moved on
            self._bad.clear()  # the alias moved on from every bad version
        active, previous = self._active, self._previous
        if active and active.entry == entry:
            return None
        if previous and previous.entry == entry:  # the alias went back: the old model is still loaded
            self._swap(previous)
            return self._emit(
                "activated",
                entry.version,
                "the previous model, still loaded",
                variant=previous.predictor.variant,
                sha256=entry.sha256,
            )
        return self._deploy(resolved, entry)

    def _deploy(self, resolved: Resolved, entry: CachedPackage) -> dict:
        version, sha = entry.version, entry.sha256
        try:
            if self.cache.find(version, sha):
                self._emit("verifying", version, "already in the cache", sha256=sha)
                folder = self.cache.package_dir(version)
                manifest = verify_dir(folder, self.public_key)
            else:
                self._emit("downloading", version, None, sha256=sha)
                archive = self.cache.incoming(version)
                try:
                    self.registry.download(resolved, archive)
                except RegistryError as exc:
                    archive.unlink(missing_ok=True)
                    self._retry = True
                    return self._emit("rejected", version, f"download failed, will retry: {exc}", sha256=sha)
                self._emit("verifying", version, None, sha256=sha)
                actual = sha256_file(archive)
                if actual != sha:
                    archive.unlink(missing_ok=True)
                    raise PackageError(
                        f"archive sha256 {actual[:16]}... differs from the registry's {sha[:16]}... "
                        "(tampered or corrupt)"
                    )
                folder, manifest = self.cache.unpack(archive, entry, self.public_key)
            if manifest.name != self.model:
                raise PackageError(f"package is model '{manifest.name}', expected '{self.model}'")
            log.info("%s %s: staging", self.model, version)
            predictor = Predictor.load(
                folder,
                manifest,
                self.prefer_variant,
                self.threads,
                version=version,
                runtime_options=self.runtime_options,
            )
        except Exception as exc:
            if isinstance(exc, PackageError):  # the package's fault: not tried again until the alias moves
                with self._lock:
                    self._bad[version] = str(exc)
            self._retry = not isinstance(exc, PackageError)
            reason = str(exc) if isinstance(exc, PackageError) else f"{type(exc).__name__}: {exc}; will retry"
            self.cache.discard(version)
            return self._emit("rejected", version, reason, sha256=sha)
        self._swap(Active(predictor, entry))
        return self._emit("activated", version, None, variant=predictor.variant, sha256=sha)

    def _boot_from_cache(self, why: str) -> Optional[dict]:
        for entry in (self.cache.current, self.cache.previous):
            if entry is None or entry.version in self._bad:
                continue
            try:
                folder = self.cache.package_dir(entry.version)
                manifest = verify_dir(folder, self.public_key)
                predictor = Predictor.load(
                    folder,
                    manifest,
                    self.prefer_variant,
                    self.threads,
                    version=entry.version,
                    runtime_options=self.runtime_options,
                )
            except Exception as exc:  # a damaged cache must not stop the device from trying the next entry
                log.error("%s: cached version %s unusable: %s", self.model, entry.version, exc)
                self.cache.forget(entry)
                continue
            self._swap(Active(predictor, entry), keep_previous=False)
            return self._emit(
                "activated",
                entry.version,
                f"booted from the cached last-known-good: {why}",
                variant=predictor.variant,
                sha256=entry.sha256,
            )
        self.last_error = f"no model to serve: {why}; no usable cached package"
        log.error("%s", self.last_error)
        return None

    # -- swap, rollback, persistence ----------------------------------------------------------

    def _swap(self, new: Active, keep_previous: bool = True) -> None:
        with self._lock:
            old = self._active
            self._previous = old if keep_previous and old is not None else None
            self._active = new  # the runner's next current() sees it
            self._failures = self._slow = self._frames = 0
        self.ready.set()

    def _counts(self, predictor: Optional[Predictor]) -> bool:
        active = self._active
        return active is not None and (predictor is None or predictor is active.predictor)

    def _roll_back(self, why: str) -> dict:
        """Called with the lock held: back to the previous model; returns the event to emit."""
        failed, back = self._active, self._previous
        reason = f"version {failed.entry.version} failed after the swap: {why}; back to version {back.entry.version}"
        self._bad[failed.entry.version] = reason
        self._active, self._previous = back, None
        self._failures = self._slow = self._frames = 0
        self._wake.set()  # the manager thread persists the rollback
        return {
            "state": "rolled_back",
            "version": failed.entry.version,
            "reason": reason,
            "variant": back.predictor.variant,
            "restored": back.entry.version,
        }

    def _persist(self) -> None:
        with self._lock:
            active, bad = self._active, dict(self._bad)
        self.cache.record(active.entry if active else None, bad)

    def _emit(self, state: str, version: str, reason: Optional[str], **extra) -> dict:
        event = {
            "state": state,
            "model": self.model,
            "version": version,
            "reason": reason,
            "ts": utc_timestamp(),
            **extra,
        }
        (log.warning if state in ("rejected", "rolled_back") else log.info)(
            "%s %s: %s%s", self.model, version, state, f" ({reason})" if reason else ""
        )
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a failing sink must not break a deployment
                log.exception("deployment event sink failed")
        return event
