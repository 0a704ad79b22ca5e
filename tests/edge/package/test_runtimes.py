"""OpenVINO is imported with its telemetry off: no event is sent (each send forks a process, which
deadlocked `lensops optimize` next to MXNet's engine, and a device must not call out)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent("""
    import onnx
    from onnx import TensorProto, helper
    from openvino_telemetry.utils.sender import TelemetrySender

    sent = []
    TelemetrySender.send = lambda self, *args, **kwargs: sent.append(args)  # every backend sends through it
    from edge.package.runtimes import import_openvino

    ov = import_openvino()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])),
              "relu.onnx")
    ov.convert_model("relu.onnx")  # the converter's own events (version, parameters, result)
    print("sent", len(sent))
""")


def test_importing_and_converting_sends_no_openvino_telemetry(tmp_path):
    # given a fresh process (the telemetry object is a process-wide singleton)
    # when openvino is imported the project's way and a model converted
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    # then nothing was sent
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "sent 0", done.stdout
