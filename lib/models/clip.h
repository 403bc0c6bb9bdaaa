/* clip.h - CLIP inference in fp32 on OpenBLAS: the ViT image tower and the causal text
 * transformer (Radford et al. 2021, "Learning Transferable Visual Models From Natural
 * Language Supervision"), read from a Hugging Face CLIPModel model.safetensors or
 * pytorch_model.bin (safetensors.h reads both) by tensor name (vision_model.*,
 * text_model.*, visual_projection, text_projection, logit_scale).
 *
 * Dimensions come from tensor shapes, so ViT-B/32, B/16 and L/14 load alike; head counts
 * from config.json beside the weights when present (text_config / vision_config
 * num_attention_heads, hidden_act, layer_norm_eps), else width/64 (CLIP's convention).
 * The input image size is patch * sqrt(positions - 1) (224 for the released models; a
 * tiny test model can use 32).  Weights are converted (F32/F16/BF16) into one owned f32
 * slab; q/k/v projections are fused into one matrix per layer, and the blocks' linear
 * weights are packed once for nn_gemm_packb (no per-call packing of weights).
 *
 * Threads: the encoders run on the pool (pool.h).  A batch of at least as many
 * samples as threads is cut into one contiguous chunk per thread, each chunk run through
 * the whole tower on its thread with single-threaded OpenBLAS products; a smaller batch
 * splits each product's columns and the attention heads over the pool instead.  Results
 * do not depend on the chunking beyond float rounding of the products.
 *
 * Not here: tokenising (bpe.h), image decoding (image.h). */
#ifndef FEDSM_CLIP_H
#define FEDSM_CLIP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct clip_layer {
    const float *ln1_w, *ln1_b;
    /* linear weights (N, K) are held packed for nn_gemm_packb (nn.h) */
    const float *qkv_w, *qkv_b; /* [3D, D], [3D]: q, k, v stacked */
    const float *out_w, *out_b; /* [D, D], [D] */
    const float *ln2_w, *ln2_b;
    const float *fc1_w, *fc1_b; /* [M, D], [M] */
    const float *fc2_w, *fc2_b; /* [D, M], [D] */
    const uint16_t *qkv_h, *out_h, *fc1_h, *fc2_h; /* bf16 copies (clip_use_bf16), else NULL */
} clip_layer;

typedef struct clip_tower {
    int width, layers, heads, mlp;
    bool quick_gelu; /* false: exact (erf) GELU */
    float ln_eps;
    clip_layer *l;
} clip_tower;

typedef struct clip_model {
    clip_tower vision, text;
    int patch, grid, image_size; /* image tower input: image_size = patch * grid */
    int vocab, context;          /* text tower: token rows, positions (77) */
    int embed_dim;               /* projection output */
    float logit_scale;           /* the stored parameter (log); exp() of it scales logits */
    /* vision */
    const float *patch_w;        /* [Dv, 3*P*P] */
    const float *class_emb;      /* [Dv] */
    const float *vpos;           /* [grid*grid+1, Dv] */
    const float *pre_ln_w, *pre_ln_b, *post_ln_w, *post_ln_b;
    const float *vproj;          /* [E, Dv] */
    /* text */
    const float *tok_emb;        /* [V, Dt] */
    const float *tpos;           /* [ctx, Dt] */
    const float *final_ln_w, *final_ln_b;
    const float *tproj;          /* [E, Dt] */
    float *slab;
    uint16_t *slab_h;            /* the bf16 copies, when clip_use_bf16 made them */
    int64_t n_params;
} clip_model;

/* Loads path (a model.safetensors or pytorch_model.bin); config_json may be NULL to look for config.json in the
 * same directory.  Returns owned or NULL (ERR_IO, ERR_FORMAT naming the tensor). */
clip_model *clip_load(const char *path, const char *config_json);
void clip_free(clip_model *m); /* NULL-safe */
/* From now on the blocks' matrix products run in bf16 (inputs rounded to bf16, sums in
 * fp32; nn_gemm_packb_bf16): packs bf16 copies of those weights once (+50% memory).  About
 * 2x faster with AVX512-BF16; embeddings move by about 1e-2 of their largest entry.
 * Attention, LayerNorm, activations, embeddings and projections stay fp32.
 * 0 or ERR_INTERNAL (memory). */
int clip_use_bf16(clip_model *m);

/* Text features before normalisation.  tokens: (B, ctx) ids, each row with its EOT at the
 * position of the row's largest id (Hugging Face pooling: argmax).  out: (B, E).
 * 0 or a negative error (ids out of range, out of memory). */
int clip_encode_text(const clip_model *m, const int32_t *tokens, int batch, int ctx, float *out);
/* Image features before normalisation.  pixels: (B, 3, S, S) preprocessed, S = image_size.
 * out: (B, E). */
int clip_encode_image(const clip_model *m, const float *pixels, int batch, float *out);

/* CLIP's preprocessing of one image: resize the shorter side to size with bicubic
 * interpolation exactly as Pillow's Image.resize(BICUBIC) does for 8-bit RGB (fixed-point,
 * horizontal pass then vertical, each rounded to uint8), center crop size x size (offsets
 * rounded half to even, as torchvision), /255, CLIP mean/std.
 * out: (3, size, size); chw: (3, h, w) uint8.  0 or a negative error. */
int clip_preprocess(float *out, const uint8_t *chw, int h, int w, int size);
/* The same up to the crop, uint8 (3, size, size): for tests. */
int clip_resize_crop_u8(uint8_t *out, const uint8_t *chw, int h, int w, int size);

extern const float clip_mean[3], clip_std[3];

/* Scales each of the n rows of x (n, d) to unit L2 norm (rows of zeros stay zero). */
void clip_l2_normalize(float *x, int n, int d);

#endif
