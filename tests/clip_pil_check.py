#!/usr/bin/python3
"""clip_pil_check.py OUTDIR - reference for test_clip's real-image preprocessing check.
Extracts a few CIFAR-10 JPEGs from ../shared/data/cifar10-jpeg.tar.zst, decodes them with
PIL, and writes for each image k: OUTDIR/k.in (u8 header "h w\\n" then planar RGB) and
OUTDIR/k.ref (planar RGB 3x224x224 after Resize(224, bicubic) + CenterCrop(224), the
torchvision-on-PIL pipeline of CLIP).  Also a 40x29 crop (non-square, rescaled) per image.
Exit 77 when the archive or PIL is missing."""
import glob
import os
import subprocess
import sys

try:
    import numpy as np
    from PIL import Image
except ImportError:
    print("PIL/numpy not available")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_clip_fixtures_lib import pil_resize_crop  # noqa: E402

src = os.environ.get("FEDSM_SHARED_DATA", "../shared/data") + "/cifar10-jpeg.tar.zst"
out = sys.argv[1]
if not os.path.exists(src):
    print(f"{src} not found")
    sys.exit(77)
subprocess.run(f"zstd -dc --long=27 '{src}' | tar x -C '{out}' --wildcards 'test/cat/000[0-3].jpg' "
               f"'test/ship/000[0-1].jpg'", shell=True, check=True)
k = 0
for path in sorted(glob.glob(f"{out}/test/*/*.jpg")):
    im = np.asarray(Image.open(path).convert("RGB"))
    for arr in (im, np.asarray(Image.fromarray(im).resize((29, 40), Image.BILINEAR))):
        chw = np.ascontiguousarray(arr.transpose(2, 0, 1))
        with open(f"{out}/{k}.in", "wb") as f:
            f.write(b"%d %d\n" % (chw.shape[1], chw.shape[2]))
            f.write(chw.tobytes())
        with open(f"{out}/{k}.ref", "wb") as f:
            f.write(pil_resize_crop(chw, 224).tobytes())
        k += 1
print(k)
