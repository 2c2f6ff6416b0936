#!/usr/bin/env python3
"""Writes two_heads.onnx, the two-output fixture of tests/test_multi_output.c
and tests/e2e_quant.sh, and two_heads_x.npy, samples for the latter.

x [N,3,12,12] -> Conv 3->8 (3x3, pads 1) -> Relu = trunk
trunk -> GlobalAveragePool -> Flatten -> Gemm 8->5        = "scores" [N,5]
trunk -> Conv 8->4 (1x1) -> Relu                          = "dense"  [N,4,12,12]
Weights are seeded random numbers (numpy, seed 7). Run with the onnx
Python package (1.12 or later); nothing at build or test time needs it.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)


def init(name, shape, scale):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


inits = [
    init("w1", (8, 3, 3, 3), 0.4), init("b1", (8,), 0.1),
    init("wg", (5, 8), 0.5), init("bg", (5,), 0.1),
    init("w2", (4, 8, 1, 1), 0.5), init("b2", (4,), 0.1),
]
nodes = [
    helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="/trunk/Conv", pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c1"], ["t"], name="/trunk/Relu"),
    helper.make_node("GlobalAveragePool", ["t"], ["g"], name="/head_a/GlobalAveragePool"),
    helper.make_node("Flatten", ["g"], ["f"], name="/head_a/Flatten"),
    helper.make_node("Gemm", ["f", "wg", "bg"], ["scores"], name="/head_a/Gemm", transB=1),
    helper.make_node("Conv", ["t", "w2", "b2"], ["c2"], name="/head_b/Conv"),
    helper.make_node("Relu", ["c2"], ["dense"], name="/head_b/Relu"),
]
graph = helper.make_graph(
    nodes, "two_heads",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
    [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 5]),
     helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["N", 4, 12, 12])],
    inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                          producer_name="qlens-tests")
model.ir_version = 7
onnx.checker.check_model(model)
onnx.save(model, "two_heads.onnx")

# 16 samples for the end-to-end tests (tests/e2e_quant.sh)
x = np.random.default_rng(11).standard_normal((16, 3, 12, 12)).astype(np.float32)
np.save("two_heads_x.npy", x)
