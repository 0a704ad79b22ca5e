"""A publisher in its own process, for the tests that kill it with SIGKILL.

Prints `ENQUEUED <seq>` after each enqueue returned (so the test knows what was acknowledged to
the caller), `CONNECTED` once connected, `DRAINED` when the outbox is empty; then waits to be killed.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from edge.mqtt import Publisher  # noqa: E402
from tests.edge.mqtt.helpers import config, inference  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--every", type=float, default=0.0, help="seconds between results")
    args = parser.parse_args()
    publisher = Publisher.from_config(config(args.url), "cam-01", args.state).start()
    publisher.publish_status({"state": "online"})
    announced = False
    for _ in range(args.count):
        print(f"ENQUEUED {publisher.publish_inference('door', inference())}", flush=True)
        if not announced and publisher.stats().connected:
            print("CONNECTED", flush=True)
            announced = True
        time.sleep(args.every)
    while not publisher.stats().connected:
        time.sleep(0.01)
    if not announced:
        print("CONNECTED", flush=True)
    if publisher.wait_until_drained(60):
        print("DRAINED", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    main()
