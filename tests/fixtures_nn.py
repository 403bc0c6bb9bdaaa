#!/usr/bin/python3
"""fixtures_nn.py - PyTorch reference values for tests/unit/test_model_torch.c.

Builds ResNet-8 (CReFF's CIFAR net, DESIGN 5 names) and ResNet-50 (torchvision layout,
written out here because python3-torch ships without torchvision) in PyTorch, fills every
tensor with a deterministic pseudo-random pattern that the C test reproduces bit for bit
(fx_value below, mirrored in the test), runs forward, loss, backward and one SGD step, and
writes the results to tests/fixtures/nn/*.bin.  Big gradient tensors are stored as their L2
norm plus 1024 sampled entries (indices from fx_index), so the files stay small.

File format (little-endian): b"FXT1", then entries until EOF:
  u32 name_len, name (utf-8), u64 count, count float32 values.

Run with Debian's python (torch 1.13): /usr/bin/python3 tests/make_fixtures.py
"""
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "nn")
SAMPLES = 1024
FULL_MAX = 4096


# ---- the deterministic pattern (mirrored in test_model_torch.c) ----
def fnv1a32(s):
    h = 0x811C9DC5
    for b in s.encode():
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def fx_uniform(name, n):
    """u in [-1, 1): 24-bit values from a per-name integer hash of the index."""
    i = np.arange(n, dtype=np.uint64)
    x = (i * np.uint64(0x9E3779B1) + np.uint64(fnv1a32(name))) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x2C1B3C6D)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(12)
    x = (x * np.uint64(0x297A2D39)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(15)
    k = (x >> np.uint64(8)).astype(np.int64) - (1 << 23)
    return k.astype(np.float64) * 2.0 ** -23


def fx_value(name, shape):
    """The fixture's value for tensor `name`: (scale, offset) by kind, computed in double,
    rounded once to float32."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = fx_uniform(name, n)
    if name in ("input", "teacher"):  # unit-scale data
        scale, off = 2.0, 0.0
    elif len(shape) == 4:  # conv: uniform with the init's std
        scale, off = math.sqrt(6.0 / (shape[0] * shape[2] * shape[3])), 0.0
    elif len(shape) == 2:  # linear weight
        scale, off = 1.0 / math.sqrt(shape[1]), 0.0
    elif name.endswith("running_var"):
        scale, off = 0.25, 1.0
    elif name.endswith("running_mean"):
        scale, off = 0.1, 0.0
    elif name in ("fc.bias", "proj.bias"):
        scale, off = 0.05, 0.0
    elif name.endswith("bn3.weight"):  # ResNet-50's last BN of a block: small (well
        scale, off = 0.02, 0.1  # conditioned, as torchvision's zero_init_residual idea)
    elif name.endswith("weight"):  # BN gamma
        scale, off = 0.2, 1.0
    elif name.endswith("bias"):  # BN beta
        scale, off = 0.1, 0.0
    else:
        raise ValueError(name)
    return (u * scale + off).astype(np.float32).reshape(shape)


def fx_index(numel):
    j = np.arange(SAMPLES, dtype=np.int64)
    step = numel // SAMPLES
    return (j * numel) // SAMPLES + (j * 7919) % step


# ---- models ----
class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(y + s)


class Bottleneck(nn.Module):
    def __init__(self, cin, planes, stride, ds):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if ds:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(y + s)


class Net(nn.Module):
    def __init__(self, arch, classes, proj, width=64, depth=8):
        super().__init__()
        self.arch = arch
        if arch == "resnet8":
            n = (depth - 2) // 6
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            cin = width
            for s in range(3):
                cout = width << s
                blocks = []
                for j in range(n):
                    blocks.append(Basic(cin, cout, 2 if (s > 0 and j == 0) else 1))
                    cin = cout
                setattr(self, "layer%d" % (s + 1), nn.Sequential(*blocks))
        else:
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            cin = width
            for s, nblk in enumerate([3, 4, 6, 3]):
                planes = width << s
                blocks = []
                for j in range(nblk):
                    blocks.append(Bottleneck(cin, planes, 2 if (s > 0 and j == 0) else 1, j == 0))
                    cin = planes * 4
                setattr(self, "layer%d" % (s + 1), nn.Sequential(*blocks))
        self.nlayers = 3 if arch == "resnet8" else 4
        feat = cin
        self.proj = None
        if proj:
            self.proj = nn.Linear(cin, proj)
            feat = proj
        self.fc = nn.Linear(feat, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.arch == "resnet50":
            x = F.max_pool2d(x, 3, 2, 1)
        for s in range(self.nlayers):
            x = getattr(self, "layer%d" % (s + 1))(x)
        pooled = x.mean(dim=(2, 3))
        feat = self.proj(pooled) if self.proj is not None else pooled
        return feat, self.fc(feat)


# ---- writing ----
class Writer:
    def __init__(self, path):
        self.f = open(path, "wb")
        self.f.write(b"FXT1")

    def put(self, name, arr):
        a = np.ascontiguousarray(np.asarray(arr, dtype=np.float32).reshape(-1))
        nb = name.encode()
        self.f.write(struct.pack("<I", len(nb)) + nb + struct.pack("<Q", a.size))
        self.f.write(a.astype("<f4").tobytes())

    def put_big(self, name, arr):
        """Full values for small tensors; else L2 norm (name + ".norm") and samples."""
        a = np.asarray(arr, dtype=np.float32).reshape(-1)
        if a.size <= FULL_MAX:
            self.put(name, a)
        else:
            self.put(name + ".norm", [np.sqrt(np.sum(a.astype(np.float64) ** 2))])
            self.put(name + ".sample", a[fx_index(a.size)])

    def close(self):
        self.f.close()


def case(fname, arch, classes, proj, size, n, train, kd=False, sgd=False):
    torch.manual_seed(0)
    net = Net(arch, classes, proj)
    sd = net.state_dict()
    with torch.no_grad():
        for k, v in sd.items():
            if k.endswith("num_batches_tracked"):
                continue
            v.copy_(torch.from_numpy(fx_value(k, tuple(v.shape))))
    net.train(train)
    x = torch.from_numpy(fx_value("input", (n, 3, size, size)))
    labels = torch.tensor([(7 * i + 3) % classes for i in range(n)], dtype=torch.long)
    feat, logits = net(x)
    loss = F.cross_entropy(logits, labels)
    if kd:
        teacher = torch.from_numpy(fx_value("teacher", (n, classes)) * 4.0)
        T, alpha = 3.0, 1.0
        kdl = F.kl_div(F.log_softmax(logits / T, dim=1), F.softmax(teacher / T, dim=1),
                       reduction="batchmean") * alpha * T * T
        loss = loss + kdl
    net.zero_grad()
    loss.backward()
    w = Writer(os.path.join(OUT, fname))
    w.put("loss", [loss.item()])
    w.put("logits", logits.detach().numpy())
    w.put_big("features", feat.detach().numpy())
    for k, p in net.named_parameters():
        w.put_big("grad." + k, p.grad.numpy())
    for k, v in net.state_dict().items():
        if "running" in k:
            w.put_big("after." + k, v.numpy())
    if sgd:
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        opt.step()
        for k, p in net.named_parameters():
            w.put_big("sgd." + k, p.detach().numpy())
    w.close()
    print("wrote", fname, "loss %.6f" % loss.item(), file=sys.stderr)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    case("resnet8_train.bin", "resnet8", 10, 0, 32, 4, True, sgd=True)
    case("resnet8_eval.bin", "resnet8", 10, 0, 32, 4, False)
    case("resnet8_proj_kd_train.bin", "resnet8", 10, 512, 32, 3, True, kd=True)
    case("resnet50_train.bin", "resnet50", 10, 0, 64, 2, True, sgd=True)
    case("resnet50_eval.bin", "resnet50", 10, 0, 64, 2, False)


if __name__ == "__main__":
    main()
