"""clip_ref.py - independent PyTorch reference of CLIP and of its BPE tokenizer, written
from the architecture (Radford et al. 2021) and the algorithm of openai/CLIP
simple_tokenizer.py; used by tests/make_clip_fixtures.py and bench/clip_torch.py.
Parameter names are Hugging Face CLIPModel's, so state_dict() is a model.safetensors.
Needs Debian's /usr/bin/python3 (torch, numpy).  Not the C code translated."""
import gzip
import html
import json
import re
import struct
import sys
import unicodedata

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- model
class Attn(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h = heads
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x, causal):
        b, t, d = x.shape
        hd = d // self.h
        split = lambda y: y.view(b, t, self.h, hd).transpose(1, 2)
        q = split(self.q_proj(x)) * hd ** -0.5
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        a = q @ k.transpose(-1, -2)
        if causal:
            a = a.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        y = a.softmax(-1) @ v
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, d, m, act):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(d, m), nn.Linear(m, d), act

    def forward(self, x):
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.act == "quick_gelu" else F.gelu(h)
        return self.fc2(h)


class Block(nn.Module):
    def __init__(self, d, heads, m, act):
        super().__init__()
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn, self.mlp = Attn(d, heads), Mlp(d, m, act)

    def forward(self, x, causal):
        x = x + self.self_attn(self.layer_norm1(x), causal)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, d, layers, heads, m, act):
        super().__init__()
        self.layers = nn.ModuleList([Block(d, heads, m, act) for _ in range(layers)])


class Emb(nn.Module):
    pass


class VisionModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, p = c["hidden_size"], c["patch_size"]
        self.patch, self.grid = p, c["image_size"] // p
        self.embeddings = Emb()
        self.embeddings.class_embedding = nn.Parameter(torch.randn(d))
        self.embeddings.patch_embedding = nn.Conv2d(3, d, p, p, bias=False)
        self.embeddings.position_embedding = nn.Embedding(self.grid ** 2 + 1, d)
        self.pre_layrnorm = nn.LayerNorm(d)
        self.encoder = Encoder(d, c["num_hidden_layers"], c["num_attention_heads"],
                               c["intermediate_size"], c["hidden_act"])
        self.post_layernorm = nn.LayerNorm(d)

    def forward(self, px):
        e = self.embeddings
        x = e.patch_embedding(px).flatten(2).transpose(1, 2)
        x = torch.cat([e.class_embedding.expand(x.shape[0], 1, -1), x], 1)
        x = self.pre_layrnorm(x + e.position_embedding.weight)
        for blk in self.encoder.layers:
            x = blk(x, False)
        return self.post_layernorm(x[:, 0])


class TextModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.embeddings = Emb()
        self.embeddings.token_embedding = nn.Embedding(c["vocab_size"], d)
        self.embeddings.position_embedding = nn.Embedding(c["max_position_embeddings"], d)
        self.encoder = Encoder(d, c["num_hidden_layers"], c["num_attention_heads"],
                               c["intermediate_size"], c["hidden_act"])
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, ids):
        e = self.embeddings
        x = e.token_embedding(ids) + e.position_embedding.weight[: ids.shape[1]]
        for blk in self.encoder.layers:
            x = blk(x, True)
        x = self.final_layer_norm(x)
        return x[torch.arange(ids.shape[0]), ids.argmax(-1)]


class Clip(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        v, t, e = cfg["vision_config"], cfg["text_config"], cfg["projection_dim"]
        self.vision_model, self.text_model = VisionModel(v), TextModel(t)
        self.visual_projection = nn.Linear(v["hidden_size"], e, bias=False)
        self.text_projection = nn.Linear(t["hidden_size"], e, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(100.0))))

    def encode_image(self, px):
        return self.visual_projection(self.vision_model(px))

    def encode_text(self, ids):
        return self.text_projection(self.text_model(ids))


def vit_config(width, layers, heads, patch, image, mlp, twidth, tlayers, theads, tmlp, vocab,
               ctx, embed):
    return {"projection_dim": embed,
            "vision_config": {"hidden_size": width, "num_hidden_layers": layers,
                              "num_attention_heads": heads, "patch_size": patch,
                              "image_size": image, "intermediate_size": mlp,
                              "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
            "text_config": {"hidden_size": twidth, "num_hidden_layers": tlayers,
                            "num_attention_heads": theads, "intermediate_size": tmlp,
                            "vocab_size": vocab, "max_position_embeddings": ctx,
                            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}}


B32 = vit_config(768, 12, 12, 32, 224, 3072, 512, 12, 8, 2048, 49408, 77, 512)


def randomize(model, seed, scale=0.02):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm1.weight") or name.endswith("layer_norm2.weight") or \
               "layrnorm.weight" in name or "layernorm.weight" in name or \
               "final_layer_norm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name == "logit_scale":
                continue
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g) * (5 if "embedding" in name else 1))


# ---------------------------------------------------------------- safetensors
def f32_to_bf16_bits(a):
    u = np.asarray(a, dtype=np.float32, order="C").reshape(-1).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even
    return u.astype(np.uint16)


def bf16_bits_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def save_safetensors(path, tensors, dtype="F32"):
    """tensors: name -> float32 numpy array.  dtype: F32, F16 or BF16."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name], dtype=np.float32, order="C")
        if dtype == "F16":
            raw = a.astype("<f2").tobytes()
        elif dtype == "BF16":
            raw = f32_to_bf16_bits(a).astype("<u2").tobytes()
        else:
            raw = a.astype("<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def stored_values(sd, dtype):
    """The float32 values a reader gets back from a file saved with dtype."""
    out = {}
    for k, v in sd.items():
        a = v.detach().numpy().astype(np.float32)
        if dtype == "F16":
            a = a.astype(np.float16).astype(np.float32)
        elif dtype == "BF16":
            a = bf16_bits_to_f32(f32_to_bf16_bits(a)).reshape(a.shape)
        out[k] = a
    return out


# ---------------------------------------------------------------- tokenizer
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _class_of(pred):
    parts, start = [], None
    for c in range(0x110001):
        ok = c < 0x110000 and not (0xD800 <= c < 0xE000) and pred(chr(c))
        if ok and start is None:
            start = c
        elif not ok and start is not None:
            parts.append(re.escape(chr(start)) + ("-" + re.escape(chr(c - 1)) if c - 1 > start else ""))
            start = None
    return "".join(parts)


class RefTokenizer:
    """CLIP's SimpleTokenizer, from its algorithm; \\p{L}/\\p{N} expanded from unicodedata
    because the stdlib re has no \\p classes.  ftfy is not applied (not installed)."""

    def __init__(self, path):
        lines = gzip.open(path).read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
        merges = [m for m in merges if len(m) == 2]
        self.byte_encoder = bytes_to_unicode()
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.ranks = dict(zip(merges, range(len(merges))))
        L = _class_of(lambda ch: unicodedata.category(ch).startswith("L"))
        N = _class_of(lambda ch: unicodedata.category(ch).startswith("N"))
        self.pat = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[%s]+|[%s]|[^\s%s%s]+"
                              % (L, N, L, N), re.IGNORECASE)

    def bpe(self, token):
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        return word

    def encode(self, text):
        text = html.unescape(html.unescape(text)).strip()
        text = re.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for tok in self.pat.findall(text):
            if tok in ("<|startoftext|>", "<|endoftext|>"):
                ids.append(self.encoder[tok])
                continue
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(tok))
        return ids

    def tokenize(self, text, ctx=77):
        ids = [self.encoder["<|startoftext|>"]] + self.encode(text) + [self.encoder["<|endoftext|>"]]
        if len(ids) > ctx:
            ids = ids[:ctx]
            ids[-1] = self.encoder["<|endoftext|>"]
        return ids
