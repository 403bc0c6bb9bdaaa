#!/usr/bin/python3
"""fixtures_creff.py - PyTorch reference values for CReFF/CLIP2FL's library pieces:
tests/unit/test_dsa.c (lib/data/dsa.c), test_gradmatch.c (lib/fl/gradmatch.c) and
test_classgrad.c (lib/fl/classgrad.c).  Writes tests/fixtures/creff/{dsa,gradmatch,classgrad}.bin
in the FXT1 format of fixtures_nn.py (b"FXT1", then u32 name_len, name, u64 count, f32 values).

Every reference is computed the PyTorch way, independently of the C code:
  dsa:       the DSA transforms as the DSA paper's code writes them (pad + index for crop,
             a clamped index mask for cutout, x.flip(3), F.affine_grid + F.grid_sample with
             align_corners=False and zero padding for scale and rotate), fixed parameters;
  gradmatch: the matching distance through autograd with create_graph (the gradient of
             the gradient, as CReFF computes it), the prototype contrastive loss in its
             literal SupCon form (N x N, text vectors repeated per anchor, diagonal
             masked), and a few SGD steps of the feature update, in float64;
  classgrad: a width-4 ResNet-8 (fixtures_nn.Net) in eval mode, a fixed batch, DSA on
             fixed parameters, CE of a separate head, autograd w.r.t. the head.
Run with Debian's python (torch 1.13): /usr/bin/python3 tests/fixtures_creff.py"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fixtures_nn import Net, Writer  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "creff")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


# ---- DSA, in the formulation of the DSA reference code (one parameter set per batch) ----
def dsa_color(x, ub, us, uc):
    x = x + (ub - 0.5) * 1.0
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (us * 2.0) + m
    m = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - m) * (uc + 0.5) + m


def dsa_crop(x, tx, ty):
    """out[y][x] = in[y + ty][x + tx], zero outside (pad by one, clamp the index)."""
    n, _, h, w = x.shape
    gb, gy, gx = torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij")
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    xp = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return xp.permute(0, 2, 3, 1).contiguous()[gb, gy, gx].permute(0, 3, 1, 2)


def dsa_cutout(x, ox, oy, size):
    n, _, h, w = x.shape
    gb, gy, gx = torch.meshgrid(torch.arange(n), torch.arange(size), torch.arange(size), indexing="ij")
    gy = torch.clamp(gy + oy - size // 2, min=0, max=h - 1)
    gx = torch.clamp(gx + ox - size // 2, min=0, max=w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype)
    mask[gb, gy, gx] = 0
    return x * mask.unsqueeze(1)


def dsa_affine(x, theta):
    th = torch.tensor(theta, dtype=torch.float32).reshape(1, 2, 3).repeat(x.shape[0], 1, 1)
    grid = F.affine_grid(th, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rot(t):
    return [math.cos(t), math.sin(-t), 0.0, math.sin(t), math.cos(t), 0.0]


def make_dsa():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 32, 32, generator=g)
    w = Writer(os.path.join(OUT, "dsa.bin"))
    w.put("x", x.numpy())
    w.put("color", dsa_color(x, 0.3, 0.8, 0.15).numpy())
    w.put("crop", dsa_crop(x, 3, -2).numpy())
    w.put("cutout", dsa_cutout(x, 30, 3, 16).numpy())
    w.put("flip", x.flip(3).numpy())
    w.put("scale", dsa_affine(x, [1.15, 0.0, 0.0, 0.0, 0.87, 0.0]).numpy())
    w.put("rotate", dsa_affine(x, rot(0.21)).numpy())
    w.put("rotate_neg", dsa_affine(x, rot(-0.26)).numpy())
    w.close()


# ---- gradient matching ----
def syn_grads(f, w, b, label):
    """CE(w f + b, label) mean over the rows of f; its gradient w.r.t. (w, b), kept in the graph."""
    w = w.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True)
    y = torch.full((f.shape[0],), label, dtype=torch.long)
    loss = F.cross_entropy(f @ w.t() + b, y)
    return torch.autograd.grad(loss, [w, b], create_graph=True)


def dist_rows(a, g):
    """sum over rows of 1 - <a_i, g_i> / (|a_i| |g_i| + 1e-6)"""
    return torch.sum(1 - torch.sum(a * g, dim=-1) / (torch.norm(a, dim=-1) * torch.norm(g, dim=-1) + 1e-6))


def match_dist(f, label, w, b, aw, ab):
    gw, gb = syn_grads(f, w, b, label)
    return dist_rows(aw, gw) + dist_rows(ab.reshape(1, -1), gb.reshape(1, -1))


def pcl_literal(f, labels, text, tau, m):
    """SupCon with the text vectors as contrast, each anchor's contrast set = text[labels]
    (m anchors per class), the diagonal masked out (as SupConLoss_text)."""
    contrast = text[labels]
    logits = f @ contrast.t() / tau
    logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
    n = f.shape[0]
    lmask = 1 - torch.eye(n, dtype=f.dtype)
    pos = (labels[:, None] == labels[None, :]).to(f.dtype) * lmask
    logprob = logits - torch.log((torch.exp(logits) * lmask).sum(1, keepdim=True))
    return -((pos * logprob).sum(1) / pos.sum(1)).mean()


def make_gradmatch():
    torch.set_default_dtype(torch.float64)
    g = torch.Generator().manual_seed(12)
    wr = Writer(os.path.join(OUT, "gradmatch.bin"))
    # one class's distance: C 6, D 20, n 9, label 2; a zero row in the real gradient
    C, D, n, lab = 6, 20, 9, 2
    f = torch.randn(n, D, generator=g)
    w = torch.randn(C, D, generator=g) * 0.3
    b = torch.randn(C, generator=g) * 0.1
    aw = torch.randn(C, D, generator=g) * 0.05
    aw[4] = 0
    ab = torch.randn(C, generator=g) * 0.05
    for name, fx in (("dist", f), ("dist0", torch.zeros(n, D))):
        fx = fx.clone().requires_grad_(True)
        d = match_dist(fx, lab, w, b, aw, ab)
        (df,) = torch.autograd.grad(d, [fx])
        wr.put(name + ".f", fx.detach().numpy())
        wr.put(name + ".loss", [d.item()])
        wr.put(name + ".df", df.numpy())
    for k, v in (("w", w), ("b", b), ("aw", aw), ("ab", ab)):
        wr.put("dist." + k, v.numpy())
    # PCL: C 5, D 16, 4 anchors per class in shuffled order, tau 0.1
    C, D, m, tau = 5, 16, 4, 0.1
    labels = torch.randperm(C * m, generator=g) % C
    f = torch.randn(C * m, D, generator=g).requires_grad_(True)
    text = F.normalize(torch.randn(C, D, generator=g), dim=1)
    loss = pcl_literal(f, labels, text, tau, m)
    (df,) = torch.autograd.grad(loss, [f])
    wr.put("pcl.f", f.detach().numpy())
    wr.put("pcl.labels", labels.numpy())
    wr.put("pcl.text", text.numpy())
    wr.put("pcl.loss", [loss.item()])
    wr.put("pcl.df", df.numpy())
    # the update: C 4, D 12, 5 features per class (labels interleaved), class 1 without a
    # real gradient, 5 SGD steps of lr 0.1; beta 0.05 (so the PCL term shows), tau 0.1
    C, D, m, iters, lr, beta = 4, 12, 5, 5, 0.1, 0.05
    labels = torch.arange(C * m) % C
    f0 = torch.randn(C * m, D, generator=g)
    w = torch.randn(C, D, generator=g) * 0.3
    b = torch.randn(C, generator=g) * 0.1
    aw = torch.randn(C, C, D, generator=g) * 0.05
    ab = torch.randn(C, C, generator=g) * 0.05
    text = torch.randn(C, D, generator=g)  # not normalised: the update normalises it
    real = [0, 2, 3]
    for name, use_text in (("upd_creff", False), ("upd_clip2fl", True)):
        fx = f0.clone()
        losses = []
        for _ in range(iters):
            fx = fx.detach().requires_grad_(True)
            L = sum(match_dist(fx[labels == c], c, w, b, aw[c], ab[c]) for c in real)
            if use_text:
                L = L + beta * pcl_literal(fx, labels, F.normalize(text, dim=1), tau, m)
            (df,) = torch.autograd.grad(L, [fx])
            losses.append(L.item())
            fx = fx.detach() - lr * df
        wr.put(name + ".out", fx.numpy())
        wr.put(name + ".loss_first", [losses[0]])
        wr.put(name + ".loss_last", [losses[-1]])
    for k, v in (("f", f0), ("labels", labels), ("w", w), ("b", b), ("aw", aw), ("ab", ab), ("text", text)):
        wr.put("upd." + k, v.numpy())
    wr.close()
    torch.set_default_dtype(torch.float32)


# ---- the client's class gradient on a fixed batch ----
def make_classgrad():
    torch.manual_seed(13)
    g = torch.Generator().manual_seed(13)
    C = 5
    wr = Writer(os.path.join(OUT, "classgrad.bin"))
    u8 = torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8)
    wr.put("images", u8.numpy())
    mean = torch.tensor(MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(STD).reshape(1, 3, 1, 1)
    x = (u8.float() / 255.0 - mean) / std
    for tag, proj, label, aug in (("plain", 0, 2, None), ("proj_rot", 6, 1, "rotate"), ("crop", 0, 4, "crop")):
        net = Net("resnet8", C, proj, width=4, depth=8)
        with torch.no_grad():
            for k, v in net.state_dict().items():
                if k.endswith("running_mean"):
                    v.copy_(torch.randn(v.shape, generator=g) * 0.1)
                elif k.endswith("running_var"):
                    v.copy_(torch.rand(v.shape, generator=g) * 0.5 + 0.75)
                elif k.endswith("bias") and "bn" in k or "downsample.1.bias" in k:
                    v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        net.eval()
        D = proj if proj else 16
        hw = torch.randn(C, D, generator=g) * 0.3
        hb = torch.randn(C, generator=g) * 0.1
        xa = x
        if aug == "rotate":
            xa = dsa_affine(x, rot(0.2))
        elif aug == "crop":
            xa = dsa_crop(x, -3, 2)
        with torch.no_grad():
            feat, _ = net(xa)
        hw.requires_grad_(True)
        hb.requires_grad_(True)
        loss = F.cross_entropy(feat @ hw.t() + hb, torch.full((4,), label, dtype=torch.long))
        gw, gb = torch.autograd.grad(loss, [hw, hb])
        for k, v in net.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                wr.put(tag + "." + k, v.numpy())
        wr.put(tag + ".head_w", hw.detach().numpy())
        wr.put(tag + ".head_b", hb.detach().numpy())
        wr.put(tag + ".loss", [loss.item()])
        wr.put(tag + ".gw", gw.numpy())
        wr.put(tag + ".gb", gb.numpy())
        wr.put(tag + ".meta", [proj, label, D])
    wr.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    make_dsa()
    make_gradmatch()
    make_classgrad()
    for f in sorted(os.listdir(OUT)):
        print("wrote", os.path.join(OUT, f), os.path.getsize(os.path.join(OUT, f)), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
