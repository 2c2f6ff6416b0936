#!/usr/bin/python3
"""Makes the shipped Fashion-MNIST example: trains a small residual CNN with
BatchNorm on Debian's dataset-fashion-mnist, exports it to ONNX, and writes the
calibration/evaluation sets and the top-1 PyTorch measures on them.

The model takes raw pixel values (float32 in [0, 255], shape [N,1,28,28]) and
normalises inside the graph, so IDX files can be fed to it directly.

Run: /usr/bin/python3 examples/fmnist/make_example.py [--epochs N] [--out DIR]
Nothing at build or test time runs this; its outputs are committed.
"""
import argparse
import gzip
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    assert zero == 0 and dtype == 0x08, path
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        s = x if self.short is None else self.short(x)
        return F.relu(y + s)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.layer1 = Block(16, 16, 1)
        self.pool = nn.MaxPool2d(2)
        self.layer2 = Block(16, 32, 2)
        self.layer3 = Block(32, 64, 2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = (x / 255.0 - MEAN) / STD
        x = self.stem(x)
        x = self.layer1(x)
        x = self.pool(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = torch.flatten(self.gap(x), 1)
        return self.fc(x)


def augment(x, gen):
    # random shifts of up to 2 pixels (pad + crop) and horizontal flips
    n = x.shape[0]
    p = F.pad(x, (2, 2, 2, 2))
    out = torch.empty_like(x)
    dx = torch.randint(0, 5, (n,), generator=gen)
    dy = torch.randint(0, 5, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    for i in range(n):
        c = p[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28]
        out[i] = torch.flip(c, (2,)) if flip[i] else c
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=HERE, help="output folder (default: next to this script)")
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)

    xtr = read_idx(f"{DATA}/train-images-idx3-ubyte.gz").astype(np.float32)[:, None]
    ytr = read_idx(f"{DATA}/train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = read_idx(f"{DATA}/t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None]
    yte = read_idx(f"{DATA}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr)

    model = Net()
    steps_per_epoch = (len(xtr) + 127) // 128
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
                          nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, epochs=args.epochs,
                                                steps_per_epoch=steps_per_epoch)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * 128:(s + 1) * 128]
            xb = augment(xtr_t[idx], gen)
            loss = F.cross_entropy(model(xb), ytr_t[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        acc = evaluate(model, xte, yte)
        print(f"epoch {epoch + 1}: loss {total / steps_per_epoch:.4f}, test top-1 {acc:.4f}",
              flush=True)

    model.eval()
    test_acc = evaluate(model, xte, yte)
    onnx_path = os.path.join(out, "fmnist_resnet.onnx")
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), onnx_path, opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)
    import onnx
    onnx.checker.check_model(onnx.load(onnx_path))

    rng = np.random.default_rng(0)
    calib_idx = np.sort(rng.choice(len(xtr), 256, replace=False))
    np.save(os.path.join(out, "calib.npy"), xtr[calib_idx])
    xev, yev = xte[:1000], yte[:1000]
    np.save(os.path.join(out, "eval.npy"), xev)
    np.save(os.path.join(out, "eval_labels.npy"), yev)
    with torch.no_grad():
        logits = model(torch.from_numpy(xev)).numpy().astype(np.float32)
    np.save(os.path.join(out, "eval_logits.npy"), logits)
    correct = int((logits.argmax(1) == yev).sum())
    ref = {"model": "fmnist_resnet.onnx", "n": 1000, "correct": correct,
           "top1": correct / 1000.0, "test10k_top1": round(test_acc, 4),
           "torch_version": torch.__version__, "opset": 13}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=2)
        f.write("\n")
    print(json.dumps(ref))


def evaluate(model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            correct += int((model(torch.from_numpy(x[i:i + 1000])).argmax(1).numpy() ==
                            y[i:i + 1000]).sum())
    return correct / len(x)


if __name__ == "__main__":
    main()
