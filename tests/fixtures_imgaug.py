#!/usr/bin/python3
"""fixtures_imgaug.py - Pillow reference outputs for tests/unit/test_imgaug.c (lib/data/imgaug.c).

torchvision is not installed here, so its PIL code paths are spelled out from its
documented algorithm: Resize(int) = shorter side to R, longer int(R * long / short), then
PIL resize(BILINEAR); CenterCrop = int(round((len - size) / 2)) offsets; resized_crop =
img.crop(box).resize(size, BILINEAR); ColorJitter's ops on PIL images = ImageEnhance
Brightness / Contrast / Color.  Inputs are the synthetic pattern images of
make_clip_fixtures_lib.pattern_image (the C test computes the same formula), plus one small
JPEG (its bytes are stored) to check decoding + the eval transform together.

Output tests/fixtures/imgaug/refs.bin (little-endian): b"IAG1", then entries until EOF:
  u32 name_len, name (ascii, space-separated fields), u32 count, count bytes.
Names: "<op> <args...>"; an entry whose name starts with "sha " holds the SHA-256 of the
output instead of the output (keeps the 224x224 cases small).  Needs numpy + PIL only:
    /usr/bin/python3 tests/fixtures_imgaug.py      (also run by make fixtures)
"""
import hashlib
import io
import os
import struct
import sys

import numpy as np
from PIL import Image, ImageEnhance

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_clip_fixtures_lib import pattern_image  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "imgaug")

# (h, w, seed): mirrored in test_imgaug.c
IMAGES = [(31, 40, 1), (43, 57, 2), (80, 64, 3), (300, 257, 4)]


def pil(chw):
    return Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)), "RGB")


def chw(im):
    return np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy()


def resize_center_crop(im, resize, size):
    w, h = im.size
    if h <= w:
        nh, nw = resize, int(resize * w / h)
    else:
        nw, nh = resize, int(resize * h / w)
    im = im.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def eval_resize(size):
    return (size * 256 + 112) // 224


entries = []


def add(name, arr, sha=False):
    data = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    if sha:
        name, data = "sha " + name, hashlib.sha256(data).digest()
    entries.append((name, data))


def main():
    ims = [pil(pattern_image(h, w, s)) for h, w, s in IMAGES]
    # eval transform: Resize(37) + CenterCrop(32) on the small ones; 224 on two (one down,
    # one up); size 224 -> resize 256
    for k in range(3):
        add(f"eval {k} 32", chw(resize_center_crop(ims[k], eval_resize(32), 32)))
    add("eval 3 224", chw(resize_center_crop(ims[3], 256, 224)), sha=True)
    add("eval 0 224", chw(resize_center_crop(ims[0], 256, 224)), sha=True)
    # Pillow resize with a box (floats), bilinear and bicubic
    boxes = [(1, (3.5, 2.25, 50.0, 40.75), 24, 20, "bilinear"),
             (2, (0.0, 0.0, 64.0, 80.0), 33, 45, "bilinear"),
             (0, (1.0, 1.0, 38.0, 30.0), 17, 13, "bicubic"),
             (1, (10.0, 5.0, 11.5, 30.0), 7, 9, "bilinear")]
    for k, box, ow, oh, f in boxes:
        flt = Image.BILINEAR if f == "bilinear" else Image.BICUBIC
        add(f"box {k} {box[0]!r} {box[1]!r} {box[2]!r} {box[3]!r} {ow} {oh} {f}",
            chw(ims[k].resize((ow, oh), flt, box=box)))
    add("box 3 10.0 20.5 200.0 251.0 224 224 bilinear",
        chw(ims[3].resize((224, 224), Image.BILINEAR, box=(10.0, 20.5, 200.0, 251.0))), sha=True)
    # torchvision resized_crop on PIL: crop (top i, left j, h, w), then resize to size
    for k, i, j, h, w, size in [(2, 5, 7, 50, 40, 32), (1, 0, 0, 43, 57, 32), (0, 10, 3, 9, 30, 32)]:
        add(f"crop {k} {i} {j} {h} {w} {size}",
            chw(ims[k].crop((j, i, j + w, i + h)).resize((size, size), Image.BILINEAR)))
    add("crop 3 30 12 200 180 224",
        chw(ims[3].crop((12, 30, 192, 230)).resize((224, 224), Image.BILINEAR)), sha=True)
    # ImageEnhance with fixed factors (ColorJitter draws them from [0.6, 1.4])
    ops = {"brightness": ImageEnhance.Brightness, "contrast": ImageEnhance.Contrast,
           "saturation": ImageEnhance.Color}
    for op, cls in ops.items():
        for f in [0.6, 0.8731, 1.0, 1.2345, 1.4, 0.0]:
            for k in (1, 0):  # image 0's outputs as digests (size)
                add(f"{op} {k} {f!r}", chw(cls(ims[k]).enhance(f)), sha=k == 0)
    # image 2's grey mean is 127.61: Contrast blends with int(mean + 0.5) = 128 (127 truncated)
    for f in [0.6, 1.4]:
        add(f"contrast 2 {f!r}", chw(ImageEnhance.Contrast(ims[2]).enhance(f)), sha=True)
    for k in (1, 2):
        add(f"gray {k}", np.asarray(ims[k].convert("L")))
    # a JPEG: PIL's decode + the eval transform
    buf = io.BytesIO()
    ims[1].save(buf, "JPEG", quality=90)
    entries.append(("jpegfile 1", buf.getvalue()))
    dec = Image.open(io.BytesIO(buf.getvalue()))
    dec.load()
    add("jpegeval 1 32", chw(resize_center_crop(dec.convert("RGB"), eval_resize(32), 32)))

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "refs.bin"), "wb") as f:
        f.write(b"IAG1")
        for name, data in entries:
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)) + nb + struct.pack("<I", len(data)) + data)
    print(f"{OUT}/refs.bin: {len(entries)} entries, Pillow {Image.__version__}")


if __name__ == "__main__":
    main()
