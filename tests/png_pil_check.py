#!/usr/bin/python3
"""png_pil_check.py DIR - the Pillow side of test_image's PNG checks (lib/data/image.c).

1. Every DIR/ours-K.png (written by the project's encoder) is decoded with PIL and its
   pixels written to DIR/ours-K.pil (planar RGB, 3*h*w bytes; PIL's mode must be RGB).
2. PNGs written by PIL in the colour types and bit depths lib/data/image.h says it reads
   (RGB, RGBA with the alpha dropped, grey, grey+alpha, palette at 8 and 4 bits with and
   without tRNS, 1-bit grey), plus a 16-bit RGB and a 16-bit grey file written here by hand
   (PIL cannot write 48-bit RGB) and an RGB file carrying a gAMA chunk, go to
   DIR/pil-NAME.png with DIR/pil-NAME.ref: "h w\\n" then the planar RGB pixels PIL gives
   (convert("RGB"), which drops alpha and ignores tRNS and gAMA; for 16-bit, the high byte
   of each sample, which is what PIL returns for 16-bit RGB).  DIR/pil.list names them.
Deterministic (fixed seeds).  Exit 77 when numpy or PIL is missing."""
import io
import os
import struct
import sys
import zlib

try:
    import numpy as np
    from PIL import Image, PngImagePlugin
except ImportError:
    print("PIL/numpy not available")
    sys.exit(77)

out = sys.argv[1]


def planar(rgb):
    return np.ascontiguousarray(np.asarray(rgb, np.uint8).transpose(2, 0, 1)).tobytes()


# 1. the project's PNGs, read by PIL
for name in sorted(os.listdir(out)):
    if name.startswith("ours-") and name.endswith(".png"):
        im = Image.open(os.path.join(out, name))
        im.load()
        if im.mode != "RGB":
            print(f"{name}: PIL reads mode {im.mode}, expected RGB")
            sys.exit(1)
        with open(os.path.join(out, name[:-4] + ".pil"), "wb") as f:
            f.write(planar(im))

# 2. PIL's PNGs (and two 16-bit files by hand), with the pixels PIL reads back
rng = np.random.default_rng(16)
H, W = 19, 27
names = []


def emit(name, data):
    """data: PNG bytes; the reference is what PIL decodes from them."""
    with open(os.path.join(out, f"pil-{name}.png"), "wb") as f:
        f.write(data)
    im = Image.open(io.BytesIO(data))
    im.load()
    if im.mode in ("I;16", "I;16B", "I"):  # 16-bit grey: the high byte of each sample
        ref = np.repeat((np.asarray(im, np.uint32) >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    else:
        ref = np.asarray(im.convert("RGB"))
    with open(os.path.join(out, f"pil-{name}.ref"), "wb") as f:
        f.write(b"%d %d\n" % ref.shape[:2])
        f.write(planar(ref))
    names.append(name)


def save(im, **kw):
    b = io.BytesIO()
    im.save(b, "PNG", **kw)
    return b.getvalue()


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png16(arr, colour_type):
    """a 16-bit PNG (filter 0 on every row) from arr (h, w[, c]) uint16"""
    h, w = arr.shape[:2]
    rows = arr.astype(">u2").reshape(h, -1).view(np.uint8).reshape(h, -1)
    raw = b"".join(b"\0" + r.tobytes() for r in rows)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
emit("rgb8", save(Image.fromarray(rgb, "RGB")))
rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
rgba[0, :, 3] = 0  # fully transparent pixels keep their colour (no compositing)
emit("rgba8", save(Image.fromarray(rgba, "RGBA")))
grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
emit("l8", save(Image.fromarray(grey, "L")))
la = rng.integers(0, 256, (H, W, 2), dtype=np.uint8)
emit("la8", save(Image.fromarray(la, "LA")))
idx = rng.integers(0, 256, (H, W), dtype=np.uint8)
pal = Image.fromarray(idx, "L").convert("P")
pal.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tolist())
emit("p8", save(pal))
emit("p8-trns", save(pal, transparency=int(idx[1, 1])))
p4 = Image.fromarray(rng.integers(0, 16, (H, W), dtype=np.uint8), "L").convert("P")
p4.putpalette(rng.integers(0, 256, 48, dtype=np.uint8).tolist())
emit("p4", save(p4, bits=4))
emit("bit1", save(Image.fromarray(rng.integers(0, 2, (H, W), dtype=np.uint8) * 255, "L").convert("1")))
emit("rgb16", png16(rng.integers(0, 65536, (H, W, 3), dtype=np.uint16), 2))
emit("l16", png16(rng.integers(0, 65536, (H, W), dtype=np.uint16), 0))
info = PngImagePlugin.PngInfo()
info.add(b"gAMA", struct.pack(">I", 100000))  # gamma 1.0: PIL ignores it
emit("rgb8-gama", save(Image.fromarray(rgb, "RGB"), pnginfo=info))
with open(os.path.join(out, "pil.list"), "w") as f:
    f.write("\n".join(names) + "\n")
print(f"{len(names)} PIL PNGs written")
