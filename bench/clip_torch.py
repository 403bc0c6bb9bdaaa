#!/usr/bin/python3
"""clip_torch.py - the PyTorch side of bench/clip.sh.
  clip_torch.py save PATH        random ViT-B/32 CLIP (real sizes) as F32 safetensors
  clip_torch.py time PATH        PyTorch images/s (batch 1, 64) and prompts/s with the same
                                 weights (tests/clip_ref.py, the reference model), in fp32
                                 and then with the model and inputs in bf16
Threads: torch.set_num_threads(FEDSM_THREADS, default 2).  Prints 'torch KEY VALUE' lines."""
import json
import os
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import clip_ref  # noqa: E402


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    base = 8 + n
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    sd = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        sd[k] = torch.from_numpy(np.frombuffer(buf[base + b: base + e], dtype="<f4").reshape(v["shape"]).copy())
    return sd


def timeit(fn, reps):
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main():
    mode, path = sys.argv[1], sys.argv[2]
    torch.set_num_threads(int(os.environ.get("FEDSM_THREADS", "2")))
    model = clip_ref.Clip(clip_ref.B32).eval()
    if mode == "save":
        clip_ref.randomize(model, 7)
        clip_ref.save_safetensors(path, {k: v.numpy() for k, v in model.state_dict().items()})
        return
    model.load_state_dict(load(path))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 49000, (64, 12), generator=g)
    ids[:, 0] = 49406
    ids[:, -1] = 49407  # 64 prompts of 12 tokens, padded to the longest as HF does
    pxs = {b: torch.randn(b, 3, 224, 224, generator=g) for b in (1, 64)}
    # fp32, then the whole model in bf16 ("torch_bf16" lines: PyTorch's own bf16 CPU path)
    for tag, dtype in (("torch", torch.float32), ("torch_bf16", torch.bfloat16)):
        model = model.to(dtype)
        with torch.no_grad():
            for b, reps in ((1, 10), (64, 2)):
                px = pxs[b].to(dtype)
                dt = timeit(lambda: model.encode_image(px), reps)
                print(f"{tag} image_b{b} {b / dt:.2f}", flush=True)
            dt = timeit(lambda: model.encode_text(ids), 5)
            print(f"{tag} text_b64 {64 / dt:.2f}", flush=True)


main()
