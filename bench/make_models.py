#!/usr/bin/python3
"""Makes the benchmark models and inputs in bench/models/ (bench/run.sh runs it
when something is missing; it only writes files that are not there yet).

  resnet18.onnx, mobilenet_v2.onnx   torchvision models with RANDOM weights
                                     (weights=None, torch.manual_seed(0); nothing is
                                     downloaded), eval mode, input "input" 1x3x224x224
                                     with a dynamic batch axis, output "output",
                                     opset 13, constant folding on
  resnet18_b{1,32}.npy,              float32 standard-normal inputs
  mobilenet_v2_b{1,32}.npy
  fmnist_b{1,32}.npy                 float32 inputs for the shipped example model
                                     examples/fmnist/fmnist_resnet.onnx ((N,1,28,28),
                                     raw pixels): uniform in [0, 255]

Each input file has its own fixed seed, so a file comes out the same whichever
others already exist. The fmnist inputs are written even when the example
model itself is not there yet.

Usage: /usr/bin/python3 bench/make_models.py [--out DIR]
"""
import argparse
import os
import sys
import zlib

import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))


def export(out, name, ctor):
    path = os.path.join(out, name + ".onnx")
    if os.path.exists(path):
        return
    torch.manual_seed(0)
    model = ctor(weights=None).eval()
    tmp = path + ".tmp"
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros(1, 3, 224, 224), tmp, opset_version=13,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          do_constant_folding=True)
    os.replace(tmp, path)
    print("wrote", path)


def save_input(out, name, batch, make):
    path = os.path.join(out, f"{name}_b{batch}.npy")
    if os.path.exists(path):
        return
    rng = np.random.default_rng(zlib.crc32(f"{name}_b{batch}".encode()))
    tmp = path + ".tmp.npy"
    np.save(tmp, np.ascontiguousarray(make(rng, batch), dtype="<f4"))
    os.replace(tmp, path)
    print("wrote", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "models"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    export(args.out, "resnet18", torchvision.models.resnet18)
    export(args.out, "mobilenet_v2", torchvision.models.mobilenet_v2)
    normal = lambda rng, b: rng.standard_normal((b, 3, 224, 224), dtype=np.float32)
    pixels = lambda rng, b: rng.uniform(0.0, 255.0, (b, 1, 28, 28)).astype(np.float32)
    for b in (1, 32):
        save_input(args.out, "resnet18", b, normal)
        save_input(args.out, "mobilenet_v2", b, normal)
        save_input(args.out, "fmnist", b, pixels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
