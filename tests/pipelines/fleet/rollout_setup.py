"""Builders for rollout tests: a params.yaml for `lensops fleet rollout`, a simulated fleet, a slow model."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import yaml

from benchmarks.fleet import SimulatedFleet, Watcher, device_ids
from tests.edge.runner_setup import MODEL

FLEET = "sim"
DEVICES = device_ids(12)  # places (edge.rings): rings [10, 50, 100] hold 3, 2 and 7 of them


def write_params(folder: Path, registry_uri: str, mqtt_url: str, **rollout) -> Path:
    params = {
        "pipeline": {
            "registry": {"type": "mlflow", "uri": registry_uri},
            "promote": {"alias": "production", "mqtt_url": mqtt_url, "topic_prefix": "lensops", "fleet": FLEET},
            # a hot swap may drop a frame of the few a short hold sees: the drop limit is not what these test
            "rollout": {"rings": [10, 50, 100], "hold_s": 5, "poll_s": 0.5, "max_drop_rate": 0.5, **rollout},
        },
        "models": {},
    }
    path = Path(folder) / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def start_fleet(
    work: Path, registry_uri: str, mqtt_url: str, public_key: Path, devices: List[str] = DEVICES, model=MODEL, **spec
):
    """The devices, serving frames at 4 fps each, in two processes; returns (fleet, watcher)."""
    watcher = Watcher(mqtt_url)
    fleet = SimulatedFleet(
        work,
        devices,
        processes=2,
        registry_uri=registry_uri,
        mqtt_url=mqtt_url,
        model=model,
        fleet=FLEET,
        public_key=str(public_key),
        fps=4,
        frame_size=64,
        frame_uri=str(public_key),  # any existing file: the frames come from memory
        status_interval_s=0.5,
        **spec,
    ).start()
    return fleet, watcher


def setup_report(fleet: SimulatedFleet, watcher: Watcher, version: str) -> str:
    """Which devices never reported `version` activated, their last deployment events, and the tail of
    each device group's log: what a failed set-up prints."""
    missing = [d for d in fleet.devices if d not in watcher.activated(version)]
    with watcher.lock:
        events = {d: [e for _, _, device, e in watcher.events if device == d][-3:] for d in missing}
    logs = "\n".join(f"--- group {i} log:\n{fleet.log(i)[-2000:]}" for i in range(len(fleet.groups)))
    return f"missing {missing}; their last events {events}\n{logs}"


def slow_onnx(path: Path, matmuls: int = 24, side: int = 512) -> None:
    """The same outputs, plus `matmuls` chained side x side matrix products that depend on the input (so
    ONNX Runtime cannot fold them away) added as 0 * their sum to the first output: a slow model."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    data = graph.input[0].name
    first = graph.output[0].name
    eye = numpy_helper.from_array((np.eye(side) * 0.5).astype(np.float32), "slow_eye")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "slow_zero")
    graph.initializer.extend([eye, zero])
    nodes = [
        helper.make_node("ReduceMean", [data], ["slow_mean"], keepdims=0),
        helper.make_node("Mul", ["slow_eye", "slow_mean"], ["slow_m0"]),
    ]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"slow_m{i}", "slow_eye"], [f"slow_m{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"slow_m{matmuls}"], ["slow_sum"], keepdims=0),
        helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nothing"]),
    ]
    renamed = f"{first}_fast"
    for node in graph.node:
        node.output[:] = [renamed if o == first else o for o in node.output]
        node.input[:] = [renamed if i == first else i for i in node.input]
    nodes.append(helper.make_node("Add", [renamed, "slow_nothing"], [first]))
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
