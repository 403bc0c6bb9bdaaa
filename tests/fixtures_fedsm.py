#!/usr/bin/python3
"""fixtures_fedsm.py - PyTorch/numpy reference values for tests/unit/test_head.c and
tests/unit/test_proto.c (FedSM head retraining and prototypes, docs/algorithms.md sections 3
step 7 and 5.4).

Writes fedsm records (zstd-compressed MessagePack, docs/format.md) to tests/fixtures/fedsm/:
  head.mpk.zst   kind features: features [N,D], labels [N], the initial head w0/b0, the
                 per-epoch orders [E,N] (<i8), and for two optimiser settings the head after
                 nn.Linear + CrossEntropyLoss + torch.optim.SGD over those orders:
                 w_plain/b_plain/loss_plain (momentum 0, wd 0), w_mom/b_mom/loss_mom
                 (momentum 0.9, wd 1e-3), w_wd/b_wd/loss_wd (momentum 0, wd 1e-2); meta lr,
                 epochs, batch.
  proto-model.mpk.zst   a tiny ResNet-8 (width 4, proj 8, 4 classes, 16x16 input) with
                 random weights and BN statistics.
  proto-shard.mpk.zst   a 70-image shard (classes 0-2 only; class 3 absent).
  proto-ref.mpk.zst     features_eval/features_train [N,8] of the shard through the model body
                 (normalised, batch 32 in shard order; BN eval / train mode), means_eval/
                 means_train [4,8] (per-class mean, unit-normalised, 0 when absent), counts;
                 and the server aggregation: agg_in [3,4,8], agg_counts [3,4] (<i8),
                 agg_P [4,8] = sum_k n_kc mu_kc/|mu_kc| / sum_k n_kc (not re-normalised).

Run with Debian's python (torch 1.13): /usr/bin/python3 tests/fixtures_fedsm.py
"""
import os
import sys

import msgpack
import numpy as np
import torch
import torch.nn.functional as F
import zstandard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixtures_nn import Net  # noqa: E402  (the PyTorch ResNet-8 of the model fixtures)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "fedsm")


def tensor(a):
    a = np.asarray(a)
    if not a.flags.c_contiguous:  # (np.ascontiguousarray would make a scalar 1-d)
        a = a.copy()
    return {"nd": True, "type": a.dtype.str, "kind": "", "shape": list(a.shape),
            "data": a.tobytes()}


def write(name, kind, tensors, meta):
    rec = {"fedsm": 1, "kind": kind, "meta": meta,
           "tensors": {k: tensor(v) for k, v in tensors.items()}}
    b = msgpack.packb(rec, use_bin_type=True)
    end = msgpack.packb({"fedsm": 1, "kind": "end", "meta": {"count": 1}, "tensors": {}},
                        use_bin_type=True)
    z = zstandard.ZstdCompressor(level=19, write_checksum=True)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(z.compress(b) + z.compress(end))


def train_head(x, y, w0, b0, orders, lr, momentum, wd, batch):
    lin = torch.nn.Linear(x.shape[1], w0.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w0))
        lin.bias.copy_(torch.from_numpy(b0))
    opt = torch.optim.SGD(lin.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    X, Y = torch.from_numpy(x), torch.from_numpy(y).long()
    loss_epoch = 0.0
    for order in orders:
        tot = 0.0
        for b0_ in range(0, len(order), batch):
            idx = torch.from_numpy(order[b0_:b0_ + batch])
            loss = F.cross_entropy(lin(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
        loss_epoch = tot / len(order)
    return (lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy(),
            np.array([loss_epoch], np.float32))


def head_fixture():
    g = np.random.default_rng(12)
    N, D, C, E, B, lr = 150, 16, 5, 20, 32, 0.1
    centres = g.normal(0, 1.0, (C, D))
    y = g.integers(0, C, N).astype(np.int32)
    x = (centres[y] + g.normal(0, 1.5, (N, D))).astype(np.float32)
    torch.manual_seed(3)
    lin = torch.nn.Linear(D, C)
    w0 = lin.weight.detach().numpy().copy()
    b0 = lin.bias.detach().numpy().copy()
    orders = np.stack([g.permutation(N) for _ in range(E)]).astype(np.int64)
    wp, bp, lp = train_head(x, y, w0, b0, orders, lr, 0.0, 0.0, B)
    wm, bm, lm = train_head(x, y, w0, b0, orders, lr, 0.9, 1e-3, B)
    wd_, bd, ld = train_head(x, y, w0, b0, orders, lr, 0.0, 1e-2, B)
    write("head.mpk.zst", "features",
          {"features": x, "labels": y, "w0": w0, "b0": b0, "orders": orders,
           "w_plain": wp, "b_plain": bp, "loss_plain": lp,
           "w_mom": wm, "b_mom": bm, "loss_mom": lm, "w_wd": wd_, "b_wd": bd, "loss_wd": ld},
          {"lr": lr, "epochs": E, "batch": B, "num_classes": C, "feat_dim": D})


def unit_means(f, y, C):
    m = np.zeros((C, f.shape[1]), np.float64)
    n = np.zeros(C, np.int64)
    for c in range(C):
        sel = f[y == c].astype(np.float64)
        n[c] = len(sel)
        if len(sel):
            mu = sel.mean(0)
            m[c] = mu / max(np.linalg.norm(mu), 1e-12)
    return m.astype(np.float32), n


def proto_fixture():
    torch.manual_seed(5)
    g = np.random.default_rng(5)
    C, W, P, S, N = 4, 4, 8, 16, 70
    net = Net("resnet8", C, P, width=W, depth=8)
    with torch.no_grad():  # random BN statistics and affine, so eval and train mode differ
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    sd = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    for k in sd:
        if k.endswith("num_batches_tracked"):
            sd[k] = np.array(0, np.int64)
    mean, std = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
    classes = ["c0", "c1", "c2", "c3"]
    write("proto-model.mpk.zst", "model", sd,
          {"arch": "resnet8", "depth": 8, "width": W, "num_classes": C, "proj_dim": P,
           "feat_dim": P, "input_size": S, "in_channels": 3, "mean": mean, "std": std,
           "classes": classes, "round": 3})
    images = g.integers(0, 256, (N, 3, S, S)).astype(np.uint8)
    labels = g.integers(0, 3, N).astype(np.int32)
    write("proto-shard.mpk.zst", "shard",
          {"images": images, "labels": labels, "index": np.arange(N, dtype=np.int64)},
          {"dataset": "fixture", "classes": classes, "client": 2, "mean": mean, "std": std})
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    feats = {}
    for mode in ("eval", "train"):
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()})
        net.train(mode == "train")
        out = []
        with torch.no_grad():
            for b in range(0, N, 32):
                out.append(net(x[b:b + 32])[0].numpy())
        feats[mode] = np.concatenate(out).astype(np.float32)
    me, ne = unit_means(feats["eval"], labels, C)
    mt, _ = unit_means(feats["train"], labels, C)
    K = 3
    agg_in = g.normal(0, 1, (K, C, P)).astype(np.float32)
    agg_counts = g.integers(0, 9, (K, C)).astype(np.int64)
    agg_counts[:, 3] = 0  # a class nobody holds
    agg_counts[1, 0] = 0
    num = np.zeros((C, P))
    for k in range(K):
        u = agg_in[k].astype(np.float64)
        u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        num += agg_counts[k][:, None] * u
    tot = agg_counts.sum(0)
    agg_P = np.where(tot[:, None] > 0, num / np.maximum(tot, 1)[:, None], 0).astype(np.float32)
    write("proto-ref.mpk.zst", "prototypes",
          {"features_eval": feats["eval"], "features_train": feats["train"],
           "means_eval": me, "means_train": mt, "counts": ne,
           "agg_in": agg_in, "agg_counts": agg_counts, "agg_P": agg_P}, {})


def main():
    os.makedirs(OUT, exist_ok=True)
    head_fixture()
    proto_fixture()
    print("wrote", OUT)


if __name__ == "__main__":
    main()
