"""Test helper: writes a tiny random insightface model pack (buffalo_l layout) to a folder.

The models are real ONNX graphs with seeded random weights, shaped so that insightface's own
``model_zoo.get_model`` routes them and its SCRFD / ArcFace / Attribute classes run their real
pre- and post-processing on them:

* ``det_10g.onnx``: SCRFD-shaped detector. Input (1, 3, height, width), dynamic. Nine outputs,
  in insightface's order: scores, boxes, keypoints, each for strides 8, 16 and 32, with two
  anchors per location, so the output at stride ``s`` has ``(H/s) * (W/s) * 2`` rows of 1, 4
  and 10 columns. Each level average-pools the input to its stride and applies a 1x1
  convolution; the biases make every anchor score above 0.5 at stride 32 (below 0.5 elsewhere)
  and give each box a face-like keypoint layout, so a real image yields detections.
* ``w600k_r50.onnx``: ArcFace-shaped recogniser. Input (N, 3, 112, 112), one (N, 512) output.
* ``genderage.onnx`` (optional): Attribute-shaped model. Input (N, 3, 96, 96), one (N, 3) output.

These are test doubles: their outputs carry no meaning beyond their shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # ONNX operator set of the tiny graphs
IR_VERSION = 9  # ONNX IR version every supported onnxruntime reads
STRIDES = (8, 16, 32)  # SCRFD feature strides, as insightface expects for 9 outputs
NUM_ANCHORS = 2  # anchors per location, as insightface expects for 9 outputs
EMBEDDING_DIM = 512  # ArcFace output width
# Keypoint offsets from the anchor centre, in units of the stride: left eye, right eye, nose
# tip, left mouth corner, right mouth corner (image-left first), as in insightface.
KPS_LAYOUT = np.array([[-0.45, -0.35], [0.45, -0.35], [0.0, 0.05], [-0.35, 0.45], [0.35, 0.45]], dtype=np.float32)
BOX_HALF_SIDE = 1.0  # distance from the anchor centre to each box side, in units of the stride


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _conv_head(
    rng: np.random.Generator, name: str, pooled: str, out_per_anchor: int, bias: np.ndarray
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """1x1 conv over a pooled level, reshaped to insightface's (rows, out_per_anchor) layout."""
    channels = NUM_ANCHORS * out_per_anchor
    weight = (rng.standard_normal((channels, 3, 1, 1)) * 0.05).astype(np.float32)
    inits = [
        numpy_helper.from_array(weight, f"{name}_w"),
        numpy_helper.from_array(np.tile(bias.astype(np.float32), NUM_ANCHORS), f"{name}_b"),
        numpy_helper.from_array(np.array([-1, out_per_anchor], dtype=np.int64), f"{name}_shape"),
    ]
    nodes = [
        helper.make_node("Conv", [pooled, f"{name}_w", f"{name}_b"], [f"{name}_conv"]),  # (1, A*K, h, w)
        helper.make_node("Transpose", [f"{name}_conv"], [f"{name}_nhwc"], perm=[0, 2, 3, 1]),  # (1, h, w, A*K)
        helper.make_node("Reshape", [f"{name}_nhwc", f"{name}_shape"], [f"{name}_rows"]),  # (h*w*A, K)
    ]
    return nodes, inits, f"{name}_rows"


def write_tiny_scrfd(path: Path, seed: int = 0) -> Path:
    """Write the SCRFD-shaped detector described in the module docstring."""
    rng = np.random.default_rng(seed)
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])
    nodes = [
        helper.make_node("AveragePool", ["input.1"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s]) for s in STRIDES
    ]  # each (1, 3, H/s, W/s)
    inits: list[onnx.TensorProto] = []
    graph_outputs = []
    # insightface reads the outputs component-major: scores at 8/16/32, then boxes, then keypoints.
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in STRIDES:
            if kind == "score":
                bias = np.array([3.0 if stride == 32 else -3.0])  # sigmoid 0.95 at stride 32, 0.05 elsewhere
            elif kind == "bbox":
                bias = np.full(4, BOX_HALF_SIDE)
            else:
                bias = KPS_LAYOUT.reshape(-1)
            head, head_inits, rows = _conv_head(rng, f"{kind}{stride}", f"pool{stride}", width, bias)
            name = f"{kind}_{stride}"
            op = "Sigmoid" if kind == "score" else "Identity"
            nodes += [*head, helper.make_node(op, [rows], [name])]  # (h*w*A, width)
            inits += head_inits
            graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"rows_{stride}", width]))
    graph = helper.make_graph(nodes, "tiny_scrfd", [image], graph_outputs, inits)
    return _save(graph, path)


def _write_embedder(path: Path, side: int, out_dim: int, out_bias: np.ndarray, seed: int, name: str) -> Path:
    """Conv (stride 8) -> flatten -> matmul: a tiny image-to-vector model with a batch axis."""
    rng = np.random.default_rng(seed)
    channels = 4
    flat = channels * (side // 8) * (side // 8)
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, side, side])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", out_dim])
    inits = [
        numpy_helper.from_array((rng.standard_normal((channels, 3, 8, 8)) * 0.05).astype(np.float32), "conv_w"),
        numpy_helper.from_array((rng.standard_normal((flat, out_dim)) * 0.05).astype(np.float32), "fc_w"),
        numpy_helper.from_array(out_bias.astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input.1", "conv_w"], ["feat"], strides=[8, 8]),  # (N, 4, side/8, side/8)
        helper.make_node("Flatten", ["feat"], ["flat"], axis=1),  # (N, 4*(side/8)^2)
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["output"]),  # (N, out_dim)
    ]
    graph = helper.make_graph(nodes, name, [image], [out], inits)
    return _save(graph, path)


def write_tiny_arcface(path: Path, seed: int = 1) -> Path:
    """Write the ArcFace-shaped recogniser: (N, 3, 112, 112) -> (N, 512)."""
    return _write_embedder(path, 112, EMBEDDING_DIM, np.zeros(EMBEDDING_DIM), seed, "tiny_arcface")


def write_tiny_genderage(path: Path, seed: int = 2) -> Path:
    """Write the Attribute-shaped gender/age model: (N, 3, 96, 96) -> (N, 3) = (female, male, age/100)."""
    return _write_embedder(path, 96, 3, np.array([0.0, 0.0, 0.3]), seed, "tiny_genderage")


def write_tiny_pack(folder: Path, *, detector: bool = True, recognizer: bool = True, genderage: bool = True) -> Path:
    """Write the chosen tiny models into ``folder`` (created) under buffalo_l file names."""
    folder.mkdir(parents=True, exist_ok=True)
    if detector:
        write_tiny_scrfd(folder / "det_10g.onnx")
    if recognizer:
        write_tiny_arcface(folder / "w600k_r50.onnx")
    if genderage:
        write_tiny_genderage(folder / "genderage.onnx")
    return folder
