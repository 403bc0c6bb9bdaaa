#!/usr/bin/python3
"""torch_resnet8.py - PyTorch reference for bench/train_resnet8.c: the same ResNet-8
(tests/fixtures_nn.py's Net), full training steps (forward, CE, backward, SGD) at batch 32
on random inputs, images/s.  Usage: torch_resnet8.py threads [batch [seconds]]"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from fixtures_nn import Net  # noqa: E402

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
n = int(sys.argv[2]) if len(sys.argv) > 2 else 32
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
torch.set_num_threads(threads)
torch.manual_seed(1)
net = Net("resnet8", 10, 0).train()
opt = torch.optim.SGD(net.parameters(), lr=0.01)
x = torch.randn(n, 3, 32, 32)
y = torch.arange(n) % 10
steps, t0 = 0, None
for it in range(10 ** 9):
    if it == 3:
        t0, c0 = time.monotonic(), time.process_time()
    opt.zero_grad()
    _, logits = net(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    opt.step()
    if it >= 3:
        steps += 1
        if time.monotonic() - t0 >= seconds and steps >= 3:
            break
dt, cpu = time.monotonic() - t0, time.process_time() - c0
# cpu_images_per_s: per CPU-second times threads, the rate with a whole core per thread
print("torch threads=%d batch=%d steps=%d images_per_s=%.1f cpu_images_per_s=%.1f loss=%.3f"
      % (threads, n, steps, steps * n / dt, steps * n / cpu * threads, loss.item()))
