#!/usr/bin/python3
"""make_clip_fixtures.py - writes tests/fixtures/clip/: a tiny random CLIP of the real
architecture (vision width 32, 2 layers, 2 heads, patch 8 on 32x32 images; text width 32,
2 layers, 4 heads, vocabulary 1000, context 77; projection 24) as Hugging Face safetensors
in F32, F16 and BF16 with its config.json, the reference embeddings of the independent
PyTorch model (tests/clip_ref.py) for each storage type, Pillow's output for CLIP's resize
+ crop of synthetic images, and the real-vocabulary token ids of the reference tokenizer
(when ../shared/data/bpe_simple_vocab_16e6.txt.gz exists).  For the `clip-embed` tool test
(tests/tools/clip-embed.sh): a tiny BPE merges file (merges-tiny.txt.gz, gzip without a
time stamp) and tool-refs.json, what the tool must write for given classes, templates and
shard images, computed here end to end (reference tokenizer, PyTorch model, Pillow resize).

Run from the repository root:  /usr/bin/python3 tests/make_clip_fixtures.py
(needs Debian's python3-torch, numpy, PIL; the committed output makes it optional)."""
import gzip
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_ref  # noqa: E402
from make_clip_fixtures_lib import pattern_image, pil_resize_crop  # noqa: E402

OUT = "tests/fixtures/clip"
VOCAB = os.environ.get("FEDSM_SHARED_DATA", "../shared/data") + "/bpe_simple_vocab_16e6.txt.gz"
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32).reshape(3, 1, 1)


def normalise(u8):
    t = torch.from_numpy(u8.astype(np.float32)).div(255)
    return (t - torch.from_numpy(MEAN)) / torch.from_numpy(STD)


# the tool test's inputs; the merges give ids below the tiny model's vocabulary of 1000
TINY_MERGES = "#version: test\nc a\nca t</w>\nd o\ndo g</w>\ns h\nsh i\nshi p</w>\n"
TOOL_CLASSES = ["cat", "dog", "ship"]
TOOL_PROMPTS = ["a photo of a {}", "itap of the {}."]  # two: the mean over templates
TOOL_REL_PROMPTS = ["{}"]  # the tool's default
TOOL_SHARDS = [[[32, 32, 21], [32, 32, 22], [32, 32, 23]],  # (h, w, pattern seed) per image
               [[45, 37, 24], [45, 37, 25]]]                # resized 45x37 -> 39x32, cropped


def tool_refs(model):
    """What `clip-embed -w tiny.safetensors --vocab merges-tiny.txt.gz -c CLASSES -p PROMPTS
    -s shard...` writes, from clip_ref: per class, the mean over templates of normalised
    text features, normalised; S = cosine of the relevance-prompt rows, diagonal 1; images
    through Resize + CenterCrop (bicubic, Pillow), CLIP's normalisation, the image tower,
    normalised; logits = exp(logit_scale) v.t."""
    path = f"{OUT}/merges-tiny.txt.gz"
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(TINY_MERGES.encode())
    tok = clip_ref.RefTokenizer(path)

    def classes_emb(templates):
        ids = [tok.tokenize(t.replace("{}", c, 1)) for c in TOOL_CLASSES for t in templates]
        ids = torch.tensor([i + [0] * (77 - len(i)) for i in ids])
        with torch.no_grad():
            f = torch.nn.functional.normalize(model.encode_text(ids).double(), dim=-1)
        f = f.reshape(len(TOOL_CLASSES), len(templates), -1).mean(1)
        return torch.nn.functional.normalize(f, dim=-1), ids[:, :12].tolist()

    text, text_ids = classes_emb(TOOL_PROMPTS)
    rel_text, _ = classes_emb(TOOL_REL_PROMPTS)
    S = rel_text @ rel_text.T
    S.fill_diagonal_(1.0)
    scale = float(model.logit_scale.exp())
    shards = []
    for spec in TOOL_SHARDS:
        px = torch.stack([normalise(pil_resize_crop(pattern_image(h, w, seed), 32)) for h, w, seed in spec])
        with torch.no_grad():
            v = torch.nn.functional.normalize(model.encode_image(px).double(), dim=-1)
        shards.append({"images": spec, "embeddings": v.tolist(), "logits": (scale * v @ text.T).tolist()})
    refs = {"classes": TOOL_CLASSES, "prompts": TOOL_PROMPTS, "relevance_prompts": TOOL_REL_PROMPTS,
            "token_ids_head": text_ids, "logit_scale": scale, "text": text.tolist(),
            "relevance_text": rel_text.tolist(), "relevance": S.tolist(), "shards": shards}
    with open(f"{OUT}/tool-refs.json", "w") as f:
        json.dump(refs, f, separators=(",", ":"))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    cfg = clip_ref.vit_config(32, 2, 2, 8, 32, 64, 32, 2, 4, 64, 1000, 77, 24)
    model = clip_ref.Clip(cfg).eval()
    clip_ref.randomize(model, 1, scale=0.1)
    sd = model.state_dict()
    with open(f"{OUT}/config.json", "w") as f:
        json.dump(cfg, f, indent=1)

    rng = np.random.default_rng(3)
    sot, eot = 998, 999
    texts = []
    for n in (0, 3, 12, 40):
        ids = [sot] + list(rng.integers(1, 990, n)) + [eot]
        texts.append(ids + [0] * (77 - len(ids)))
    ids = [sot] + list(rng.integers(1, 990, 75)) + [eot]
    texts.append(ids)  # full context
    ids = [sot] + list(rng.integers(1, 990, 6)) + [eot]
    texts.append(ids + [eot] * (77 - len(ids)))  # padded with the EOT id (HF style)
    images = [rng.integers(0, 256, (3, 32, 32), dtype=np.uint8) for _ in range(3)]
    odd = pattern_image(40, 56, 5)  # goes through resize 40x56 -> 32x44 -> crop 32
    refs = {"texts": [[int(v) for v in t] for t in texts],
            "images": [im.flatten().tolist() for im in images],
            "odd_image": {"h": 40, "w": 56, "seed": 5}}
    px = torch.stack([normalise(im) for im in images] + [normalise(pil_resize_crop(odd, 32))])
    for dt in ("F32", "F16", "BF16"):
        name = {"F32": "tiny", "F16": "tiny-f16", "BF16": "tiny-bf16"}[dt]
        clip_ref.save_safetensors(f"{OUT}/{name}.safetensors", {k: v.numpy() for k, v in sd.items()}, dt)
        m = clip_ref.Clip(cfg).eval()
        m.load_state_dict({k: torch.from_numpy(v) for k, v in clip_ref.stored_values(sd, dt).items()})
        with torch.no_grad():
            t = m.encode_text(torch.tensor(texts))
            v = m.encode_image(px)
        refs[dt] = {"text": t.numpy().tolist(), "image": v.numpy().tolist(),
                    "logit_scale": float(m.logit_scale)}
        if dt == "F32":
            tool_refs(m)

    prep = []
    for h, w, size, seed in ((23, 37, 48, 1), (100, 80, 48, 2), (32, 32, 72, 3), (50, 50, 50, 4),
                             (61, 33, 20, 5)):
        prep.append({"h": h, "w": w, "size": size, "seed": seed,
                     "out": pil_resize_crop(pattern_image(h, w, seed), size).flatten().tolist()})
    refs["preprocess"] = prep
    with open(f"{OUT}/refs.json", "w") as f:
        json.dump(refs, f, separators=(",", ":"))

    if os.path.exists(VOCAB):
        tok = clip_ref.RefTokenizer(VOCAB)
        with open("tests/fixtures/clip/tokenizer-strings.txt", encoding="utf-8") as f:
            strings = [s.rstrip("\n") for s in f]
        with open(f"{OUT}/tokens-real.jsonl", "w", encoding="utf-8") as f:
            for s in strings:
                f.write(json.dumps({"text": s, "ids": tok.tokenize(s)}, ensure_ascii=False) + "\n")
    else:
        print(f"note: {VOCAB} not found; tokens-real.jsonl not written", file=sys.stderr)
    print("wrote", OUT)


main()
