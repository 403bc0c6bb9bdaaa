"""make_clip_fixtures_lib.py - Pillow-side helpers shared by make_clip_fixtures.py and
clip_pil_check.py (numpy + PIL only, no torch)."""
import numpy as np
from PIL import Image


def pattern_image(h, w, seed):
    """Synthetic planar RGB (3, h, w); the C test computes the same formula."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(h), np.arange(w), indexing="ij")
    return ((x * x * 7 + y * 13 + c * 50 + (x * y * 3) % 29 + seed * 17) % 256).astype(np.uint8)


def pil_resize_crop(chw, size):
    """torchvision Resize(size, BICUBIC) + CenterCrop(size) on a PIL image, spelled out."""
    im = Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)), "RGB")
    w, h = im.size
    if h <= w:
        nh, nw = size, int(size * w / h)
    else:
        nw, nh = size, int(size * h / w)
    im = im.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im).transpose(2, 0, 1).copy()
