"""The project stream: the device's HTTP page, MJPEG streams, health and metrics.

The runner hands each frame with its predictions to a `StreamState` (cheap: a reference is kept)
and the server draws and encodes only when a client is watching, in the client's own thread.

Endpoints: `/` the page; `/status.json`; `/stream.mjpg?source=ID&kind=project|device`;
`/healthz` (200 while no source is degraded or failed and no other client uses our MQTT client id,
503 naming them otherwise: a finished file replay is healthy); `/metrics` (Prometheus text).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.annotate import annotate
from edge.messages import Prediction
from edge.metrics import CONTENT_TYPE, render_metrics
from edge.stream_page import render_page

log = logging.getLogger(__name__)

KINDS = ("project", "device")
BOUNDARY = "lensops-frame"
KEEPALIVE_S = 1.0


def placeholder_jpeg(source_id: str) -> bytes:
    """What a stream shows before its source's first frame."""
    image = np.full((240, 320, 3), 48, np.uint8)
    cv2.putText(
        image, f"waiting for '{source_id}'", (12, 124), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (220, 220, 220), 1, cv2.LINE_AA
    )
    return cv2.imencode(".jpg", image)[1].tobytes()


class StreamConfig(BaseModel):
    """Where the device serves its page and streams."""

    model_config = ConfigDict(extra="forbid")

    port: int = Field(ge=0, le=65535, description="TCP port (0: any free port)")
    host: str = Field("0.0.0.0", description="address to listen on (127.0.0.1: this machine only)")
    jpeg_quality: int = Field(80, ge=1, le=100, description="JPEG quality of the MJPEG streams")


class _Latest:
    """The newest frame of one source and the JPEGs made from it so far."""

    def __init__(self) -> None:
        self.version = 0
        self.image: Optional[np.ndarray] = None
        self.predictions: list[Prediction] = []
        self.model: dict = {}
        self.jpegs: dict[str, bytes] = {}


class StreamState:
    """What the server shows; thread-safe, updated by the runner, read by the server's threads."""

    def __init__(self, jpeg_quality: int = 80):
        self.jpeg_quality = jpeg_quality
        self._latest: dict[str, _Latest] = {}
        self._stats: dict = {}
        self._latency: dict[str, dict] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.clients = 0

    def update_frame(
        self,
        source_id: str,
        device_frame_bgr: np.ndarray,
        predictions: list[Prediction],
        model_info: Optional[dict],
        latency_ms: Optional[dict] = None,
    ) -> None:
        """The newest frame of a source (kept by reference: do not change it afterwards), its predictions
        as in the inference payload, the model {name, version, variant} and optionally its latency_ms."""
        with self._cond:
            latest = self._latest.setdefault(source_id, _Latest())
            latest.version += 1
            latest.image, latest.predictions, latest.model = device_frame_bgr, list(predictions), dict(model_info or {})
            latest.jpegs = {}
            if latency_ms and isinstance(latency_ms.get("total"), (int, float)):
                lat = self._latency.setdefault(source_id, {"count": 0, "sum_s": 0.0})
                lat["count"] += 1
                lat["sum_s"] += latency_ms["total"] / 1000
                lat["last_ms"] = dict(latency_ms)
            self._cond.notify_all()

    def set_stats(self, stats: dict) -> None:
        """The runner's stats: `sources` (id -> Source.stats() plus anything else), `outbox_depth`,
        and any other device-level keys (shown on the page as they are)."""
        with self._cond:
            self._stats = dict(stats)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def source_ids(self) -> list[str]:
        with self._cond:
            return list(dict.fromkeys([*(self._stats.get("sources") or {}), *self._latest]))

    def status(self) -> dict:
        """Everything the page shows, as served at /status.json."""
        with self._cond:
            stats = dict(self._stats)
            sources_stats = stats.pop("sources", None) or {}
            ids = list(dict.fromkeys([*sources_stats, *self._latest]))
            sources = {
                sid: {
                    "model": self._latest[sid].model if sid in self._latest else {},
                    "predictions": [p.to_dict() for p in self._latest[sid].predictions] if sid in self._latest else [],
                    "stats": sources_stats.get(sid, {}),
                }
                for sid in ids
            }
            return {"sources": sources, "device": stats}

    def health(self) -> tuple[bool, dict]:
        with self._cond:
            states = {sid: s.get("state") for sid, s in (self._stats.get("sources") or {}).items()}
            conflict = self._stats.get("client_id_conflict")
        degraded = sorted(sid for sid, state in states.items() if state in ("degraded", "failed"))
        body = {"status": "degraded" if degraded or conflict else "ok", "degraded": degraded, "sources": states}
        if conflict:
            body["client_id_conflict"] = conflict
        return not (degraded or conflict), body

    def metrics(self) -> str:
        with self._cond:
            models = {sid: latest.model for sid, latest in self._latest.items()}
            latency = {sid: dict(lat) for sid, lat in self._latency.items()}
            stats = dict(self._stats)
        return render_metrics(stats, models, latency, self.clients)

    def next_jpeg(self, source_id: str, kind: str, after: int, timeout: float) -> tuple[int, Optional[bytes]]:
        """(version, JPEG) of the first frame newer than `after`; (after, None) on timeout or close."""
        with self._cond:

            def newer():
                latest = self._latest.get(source_id)
                return self._closed or (latest is not None and latest.version > after and latest.image is not None)

            if not self._cond.wait_for(newer, timeout) or self._closed:
                return after, None
            latest = self._latest[source_id]
            version, image, cached = latest.version, latest.image, latest.jpegs.get(kind)
            predictions, model = latest.predictions, latest.model
        if cached is None:  # drawn and encoded once per frame and kind, however many clients watch
            if kind == "project":
                image = annotate(image, predictions, model)
            cached = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])[1].tobytes()
            with self._cond:
                if latest.version == version:
                    latest.jpegs[kind] = cached
        return version, cached

    def count_client(self, delta: int) -> None:
        with self._cond:
            self.clients += delta

    @property
    def closed(self) -> bool:
        return self._closed


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, code: int, body: bytes | str, content_type: str) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _json(self, code: int, value: dict) -> None:
        self._send(code, json.dumps(value, default=str), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        state = self.server.state
        if url.path == "/":
            self._send(200, render_page(state.status()), "text/html; charset=utf-8")
        elif url.path == "/status.json":
            self._json(200, state.status())
        elif url.path == "/healthz":
            healthy, body = state.health()
            self._json(200 if healthy else 503, body)
        elif url.path == "/metrics":
            self._send(200, state.metrics(), CONTENT_TYPE)
        elif url.path == "/stream.mjpg":
            self._stream(parse_qs(url.query))
        else:
            self._json(404, {"error": f"no page at {url.path}; try /, /status.json, /stream.mjpg, /healthz, /metrics"})

    def _stream(self, query: dict) -> None:
        state = self.server.state
        source_id, kind = query.get("source", [None])[0], query.get("kind", ["project"])[0]
        if kind not in KINDS:
            return self._json(400, {"error": f"kind '{kind}' is not among: {', '.join(KINDS)}"})
        known = state.source_ids()
        if source_id not in known:
            return self._json(404, {"error": f"unknown source '{source_id}'; sources: {', '.join(known) or 'none'}"})
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        version = 0
        state.count_client(+1)
        try:
            # each part is followed at once by the next boundary: browsers show a part only when it is closed
            self.wfile.write(b"--%s\r\n" % BOUNDARY.encode())
            last = None
            while not state.closed:
                version, jpeg = state.next_jpeg(source_id, kind, version, timeout=KEEPALIVE_S)
                # no new frame: repeat the last one (or a placeholder), so clients and proxies see a live stream
                jpeg = jpeg or last or placeholder_jpeg(source_id)
                last = jpeg
                self.wfile.write(
                    b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n--%s\r\n"
                    % (len(jpeg), jpeg, BOUNDARY.encode())
                )
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client went away
        finally:
            state.count_client(-1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: StreamState


class StreamServer:
    """Serves a StreamState over HTTP from a background thread: `start()`, `url`, `stop()`."""

    def __init__(self, config: StreamConfig, state: StreamState):
        self.config = config
        self.state = state
        self._http: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def from_config(cls, config: StreamConfig, state: Optional[StreamState] = None) -> "StreamServer":
        return cls(config, state or StreamState(config.jpeg_quality))

    def start(self) -> "StreamServer":
        try:
            self._http = _Server((self.config.host, self.config.port), _Handler)
        except OSError as exc:
            raise OSError(f"stream: cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}") from exc
        self._http.state = self.state
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.2}, name="stream-http", daemon=True
        )
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        return self._http.server_address[1] if self._http else self.config.port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        return f"http://{host}:{self.port}/"

    def stop(self) -> None:
        self.state.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(2)
