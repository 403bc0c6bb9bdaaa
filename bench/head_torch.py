#!/usr/bin/python3
"""head_torch.py N D C EPOCHS BATCH - the PyTorch side of bench/head.sh: a fresh
nn.Linear(D, C) trained with torch.optim.SGD(lr 0.01) and F.cross_entropy on N random
labelled features, EPOCHS epochs of shuffled mini-batches (the CReFF/FedSM retraining loop,
docs/algorithms.md 3 step 7, 5.4 step 4), one thread.  Prints the same key=value line as
head_bench."""
import sys
import time

import torch
import torch.nn.functional as F

n, D, C, E, B = (int(a) for a in sys.argv[1:6])
torch.set_num_threads(1)
torch.manual_seed(1)
x = torch.randn(n, D)
y = torch.arange(n) % C
lin = torch.nn.Linear(D, C)
opt = torch.optim.SGD(lin.parameters(), lr=0.01)
w0, c0 = time.perf_counter(), time.process_time()
steps = 0
for e in range(E):
    perm = torch.randperm(n)
    for b0 in range(0, n, B):
        idx = perm[b0:b0 + B]
        loss = F.cross_entropy(lin(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
ws, cs = time.perf_counter() - w0, time.process_time() - c0
print("head steps=%d seconds=%.4f cpu_seconds=%.4f steps_s=%.0f loss=%.4f" % (steps, ws, cs, steps / ws, loss.item()))
