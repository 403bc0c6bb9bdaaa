#!/usr/bin/python3
"""creff_torch.py - PyTorch counterpart of bench/creff_bench.c (same arguments, same output
fields), for bench/creff.sh:
  client C D REPEATS THREADS: the CReFF client gradient step the way the reference code
    does it (eval-mode ResNet-8 body, DSA rotate through affine_grid + grid_sample, CE of
    the head, torch.autograd.grad w.r.t. the head), with the body under no_grad (cheaper
    than the reference, which keeps the body's graph);
  featgen C D ITERS TEXT THREADS: the federated-feature update as CReFF/CLIP2FL write it
    (per class, the head gradient with create_graph=True, per-row cosine distance, plus
    beta times the literal SupCon PCL when TEXT is 1; backward; SGD on the features)."""
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from fixtures_creff import dist_rows, pcl_literal  # noqa: E402
from fixtures_nn import Net  # noqa: E402


def client(C, D, repeats, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    net = Net("resnet8", C, 0 if D == 256 else D).eval()
    n = 620
    tot = sum(0.6 ** c for c in range(C))
    counts, acc = [], 0.0
    edges = [int((sum(0.6 ** k for k in range(c + 1))) / tot * n + 0.5) for c in range(C)]
    edges[-1] = n
    prev = 0
    for e in edges:
        counts.append(max(e - prev, 0))
        prev = max(e, prev)
    x = torch.randn(n, 3, 32, 32)
    labels = torch.cat([torch.full((k,), c, dtype=torch.long) for c, k in enumerate(counts)])
    hw = (torch.randn(C, D) * 0.05).requires_grad_(True)
    hb = torch.zeros(C).requires_grad_(True)
    images = 0
    w0, c0 = time.monotonic(), time.process_time()
    for c in range(C):
        idx = (labels == c).nonzero().flatten()
        if len(idx) == 0:
            continue
        for _ in range(repeats):
            pick = idx[torch.randperm(len(idx))[:32]]
            xb = x[pick]
            t = (torch.rand(1).item() - 0.5) * 2 * 15 / 180 * math.pi
            th = torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]])
            grid = F.affine_grid(th.expand(len(pick), 2, 3), list(xb.shape), align_corners=False)
            xb = F.grid_sample(xb, grid, align_corners=False)
            with torch.no_grad():
                feat, _ = net(xb)
            loss = F.cross_entropy(feat @ hw.t() + hb, torch.full((len(pick),), c, dtype=torch.long))
            torch.autograd.grad(loss, [hw, hb])
            images += len(pick)
    w, cp = time.monotonic() - w0, time.process_time() - c0
    print("step=client C=%d D=%d repeats=%d threads=%d images=%d seconds=%.3f cpu_seconds=%.3f "
          "images_per_s=%.1f cpu_images_per_s=%.1f" % (C, D, repeats, threads, images, w, cp, images / w,
                                                        images * threads / cp))


def featgen(C, D, iters, text, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    m = 100
    feats = torch.randn(C * m, D).requires_grad_(True)
    labels = torch.arange(C * m) // m
    W = (torch.randn(C, D) * 0.05).requires_grad_(True)
    b = torch.zeros(C).requires_grad_(True)
    aw = torch.randn(C, C, D) * 0.01
    ab = torch.randn(C, C) * 0.01
    T = F.normalize(torch.randn(C, D), dim=1)
    opt = torch.optim.SGD([feats], lr=0.1)
    w0, c0 = time.monotonic(), time.process_time()
    for _ in range(iters):
        loss = 0.0
        for c in range(C):
            fc = feats[c * m:(c + 1) * m]
            ce = F.cross_entropy(fc @ W.t() + b, labels[c * m:(c + 1) * m])
            gw, gb = torch.autograd.grad(ce, [W, b], create_graph=True)
            loss = loss + dist_rows(aw[c], gw) + dist_rows(ab[c].reshape(1, -1), gb.reshape(1, -1))
        if text:
            loss = loss + 0.001 * pcl_literal(feats, labels, T, 0.1, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w, cp = time.monotonic() - w0, time.process_time() - c0
    print("step=featgen C=%d D=%d iters=%d text=%d threads=%d seconds=%.3f cpu_seconds=%.3f s_per_iter=%.5f "
          "cpu_s_per_iter=%.5f" % (C, D, iters, text, threads, w, cp, w / iters, cp / threads / iters))


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) >= 5 and a[0] == "client":
        client(*map(int, a[1:5]))
    elif len(a) >= 6 and a[0] == "featgen":
        featgen(*map(int, a[1:6]))
    else:
        sys.exit("usage: creff_torch.py client C D REPEATS THREADS | featgen C D ITERS TEXT THREADS")
