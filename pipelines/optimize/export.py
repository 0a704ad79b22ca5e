"""Trained model folder -> an inference graph whose outputs match the package contract -> ONNX.

Classification: softmax probabilities [N, C]. Detection: per-class scores [N, A, C] (background
dropped) and normalized corner boxes [N, A, 4]; the anchors are baked in as a constant and the
box decoding is plain arithmetic, so no MXNet-only operator (box_nms, box_decode, slice_like)
reaches the ONNX graph. NMS runs on the device (edge.package.codec), identically for every variant.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mxnet as mx
import numpy as np

from common.errors import UserError
from training import networks
from training.init_source import load_model_folder

log = logging.getLogger(__name__)
INPUT_NAME = "data"
OUTPUT_NAMES = {"classification": ("probabilities",), "detection": ("scores", "boxes")}


class Probabilities(mx.gluon.HybridBlock):
    def __init__(self, net):
        super().__init__(prefix="export_")
        self.net = net

    def hybrid_forward(self, F, x):
        return F.softmax(self.net(x), axis=-1)


class ScoresBoxes(mx.gluon.HybridBlock):
    """GluonCV SSD up to (and excluding) NMS: class probabilities and decoded, normalized boxes."""

    def __init__(self, ssd, size: int):
        super().__init__(prefix="export_")
        self.ssd = ssd
        with mx.autograd.train_mode():
            _, _, anchors = ssd(mx.nd.zeros((1, 3, size, size)))  # centre format, pixels: [1, A, 4]
        anchors = anchors.asnumpy().astype(np.float32) / size
        stds = ssd.bbox_decoder._stds
        with self.name_scope():
            self.centre = self.params.get_constant("centre", mx.nd.array(anchors[:, :, :2]))
            self.scale_xy = self.params.get_constant(
                "scale_xy", mx.nd.array(anchors[:, :, 2:] * np.array(stds[:2], np.float32))
            )
            self.wh = self.params.get_constant("wh", mx.nd.array(anchors[:, :, 2:] / 2))
            self.stds_wh = self.params.get_constant(
                "stds_wh", mx.nd.array(np.array(stds[2:], np.float32).reshape(1, 1, 2))
            )
        self._num = ssd.num_classes + 1

    def hybrid_forward(self, F, x, centre, scale_xy, wh, stds_wh):
        ssd = self.ssd
        features = ssd.features(x)
        cls_preds = [F.flatten(F.transpose(cp(f), (0, 2, 3, 1))) for f, cp in zip(features, ssd.class_predictors)]
        box_preds = [F.flatten(F.transpose(bp(f), (0, 2, 3, 1))) for f, bp in zip(features, ssd.box_predictors)]
        cls_preds = F.concat(*cls_preds, dim=1).reshape((0, -1, self._num))
        box_preds = F.concat(*box_preds, dim=1).reshape((0, -1, 4))
        probs = F.softmax(cls_preds, axis=-1)
        scores = F.slice_axis(probs, axis=-1, begin=1, end=None)
        offset = F.slice_axis(box_preds, axis=-1, begin=0, end=2)
        log_wh = F.slice_axis(box_preds, axis=-1, begin=2, end=4)
        centres = F.broadcast_add(F.broadcast_mul(offset, scale_xy), centre)
        half = F.broadcast_mul(F.exp(F.broadcast_mul(log_wh, stds_wh)), wh)
        boxes = F.concat(centres - half, centres + half, dim=-1)
        return scores, boxes


def load_gluon(model_dir: Path):
    """The trained network as a Gluon block with its weights, plus its model.json."""
    source, meta = load_model_folder(Path(model_dir))
    spec = networks.parse_network(meta["network"], meta["task"])
    net = networks.build_network(spec, meta["classes"])
    size = meta["input"]["size"][0]
    networks.initialize(net, size)
    params = net.collect_params()
    missing = sorted(set(params) - set(source))
    if missing:
        raise UserError(f"{model_dir}: weights missing for {missing[:3]} (not a model this code trained?)")
    for name, param in params.items():
        param.set_data(mx.nd.array(source[name]))
    return net, meta


def inference_block(model_dir: Path):
    net, meta = load_gluon(model_dir)
    size = meta["input"]["size"][0]
    block = Probabilities(net) if meta["task"] == "classification" else ScoresBoxes(net, size)
    for param in block.params.values():  # the block's own constants (anchors); the network is loaded
        param.initialize()
    block.hybridize(static_alloc=True, static_shape=True)
    block(mx.nd.zeros((1, 3, size, size)))
    return block, meta


def export_mxnet(block, out_prefix: Path) -> tuple[Path, Path]:
    """Symbol + params of the inference block (the MXNet-native reference variant)."""
    block.export(str(out_prefix), epoch=0)
    return Path(f"{out_prefix}-symbol.json"), Path(f"{out_prefix}-0000.params")


def _fixed_gamma_params(symbol: Path, params: Path) -> dict:
    """The weights with gamma = 1 wherever a BatchNorm has fix_gamma (MXNet's default for
    symbol-built layers, e.g. GluonCV's SSD expander): MXNet ignores that gamma, its ONNX exporter does not."""
    graph = json.loads(Path(symbol).read_text())
    arrays = mx.nd.load(str(params))
    for node in graph["nodes"]:
        if node["op"] == "BatchNorm" and node.get("attrs", {}).get("fix_gamma", "True") == "True":
            key = f"arg:{node['name']}_gamma"
            if key in arrays:
                arrays[key] = mx.nd.ones_like(arrays[key])
    return {key.split(":", 1)[1]: value for key, value in arrays.items()}


def export_onnx(symbol: Path, params: Path, task: str, size: int, out: Path) -> Path:
    """ONNX (opset 13) with a dynamic batch dimension and the contract's output names."""
    import onnx

    mx.onnx.export_model(
        mx.sym.load(str(symbol)),
        _fixed_gamma_params(symbol, params),
        in_shapes=[(1, 3, size, size)],
        in_types=[np.float32],
        onnx_file_path=str(out),
        dynamic=True,
        dynamic_input_shapes=[(None, 3, size, size)],
        run_shape_inference=True,
        verbose=False,
    )
    model = onnx.load(str(out))
    # Weights are initializers, not inputs: otherwise ONNX Runtime cannot constant-fold them.
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.input[0].name, old_in = INPUT_NAME, model.graph.input[0].name
    renames = {o.name: new for o, new in zip(model.graph.output, OUTPUT_NAMES[task])}
    renames[old_in] = INPUT_NAME
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for output in model.graph.output:
        output.name = renames.get(output.name, output.name)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out
