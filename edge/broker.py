"""`lensops broker`: an embedded MQTT 3.1.1 broker (amqtt) so a laptop demo needs no system service.

Anonymous, in memory, one TCP listener; it runs until SIGINT or SIGTERM. For production use
Mosquitto, EMQX, HiveMQ or AWS IoT Core: the runner speaks plain MQTT to any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Optional, Sequence

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883


def broker_config(host: str, port: int) -> dict:
    """amqtt's configuration: one TCP listener, anonymous clients, no $SYS chatter."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def serve(host: str, port: int, stop: asyncio.Event) -> None:
    """Run the broker until `stop` is set."""
    from amqtt.broker import Broker  # imported here: the runner never needs it

    broker = Broker(broker_config(host, port))
    amqtt_log = logging.getLogger("amqtt")
    level = amqtt_log.level
    amqtt_log.setLevel(logging.CRITICAL)  # a bind error is reported once, by run_broker, without a traceback
    try:
        await broker.start()
    finally:
        amqtt_log.setLevel(level)
    log.info("MQTT broker listening on %s:%d", host, port)
    print(f"lensops broker: listening on mqtt://{host}:{port} (Ctrl-C to stop)", flush=True)
    try:
        await stop.wait()
    finally:
        await broker.shutdown()


def run_broker(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve on host:port until SIGINT/SIGTERM. Raises RuntimeError when the port cannot be bound."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(host, port, stop)

    try:
        asyncio.run(main())
    except OSError as exc:
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc}") from exc
    except Exception as exc:
        if type(exc).__name__ == "BrokerError":  # amqtt wraps bind errors in BrokerError
            raise RuntimeError(f"cannot listen on {host}:{port}: {exc}") from exc
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="lensops broker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 to accept cameras on the network)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        run_broker(args.host, args.port)
    except RuntimeError as exc:
        print(f"lensops broker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
