/* local-train - the client step of a federated round (docs/algorithms.md 1.6; CLIP2FL/FedSM KD 4.2):
 * load the global model and one client shard, train E epochs of plain SGD with the papers'
 * crop/flip augmentation (encoded ImageNet-style shards: torchvision's RandomResizedCrop,
 * flip and ColorJitter per image, imgaug.h), optionally distilling from CLIP teacher
 * logits, and write an `update` record (all weights and BN buffers, sample count, client id, round).
 * Not here: aggregation (aggregate), teacher logits (clip-embed). */
#include "classes.h"
#include "endpoint.h"
#include "err.h"
#include "imgaug.h"
#include "inputs.h"
#include "model.h"
#include "norm.h"
#include "pool.h"
#include "rng.h"
#include "shard.h"
#include "teacher.h"
#include "tool.h"
#include "classgrad.h"
#include "proto.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn static void usage(void)
{
    printf("usage: local-train --model G --shard SHARD -o UPDATE [options]\n"
           "Train the global model G on one client's shard; write an update record.\n\n"
           "  -m, --model G        global model (kind model)\n"
           "  -d, --shard SHARD    the client's data (kind shard, from partition)\n"
           "  -o, --out UPDATE     output: file, '-' or ZeroMQ endpoint (kind update)\n"
           "      --teacher T      CLIP teacher logits: clip-embed's output stream (its teacher\n"
           "                       record whose client is the shard's is used); adds\n"
           "                       kd_alpha * T^2 * KL(teacher || student) to the loss\n"
           "      --kd-alpha A     distillation weight (default 1.0)\n"
           "      --kd-temp T      distillation temperature (default 3.0)\n"
           "  -e, --epochs E       local epochs (default 10)\n"
           "  -b, --batch B        batch size (default 32; the last partial batch is kept)\n"
           "      --lr LR          SGD learning rate (default 0.1)\n"
           "      --momentum M     SGD momentum (default 0)\n"
           "      --wd WD          weight decay (default 0)\n"
           "      --aug MODE       batch (one crop/flip per batch, as the reference code),\n"
           "                       sample (per image) or none (default batch).  Encoded\n"
           "                       (JPEG/PNG) shards: batch and sample both mean per-image\n"
           "                       RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4) to the\n"
           "                       model's input size; none, Resize + CenterCrop\n"
           "      --round R        round this update is for (default: the model's round + 1)\n"
           "      --client K       client id (default: the shard's meta.client)\n"
           "  -s, --seed S         seed (default 7); streams keyed by (seed, round, client)\n"
           "  -t, --threads N      compute threads (default 1; 0 = all cores)\n"
           "      --timeout SEC    ZeroMQ timeout (default 600)\n"
           "client stages of the methods, computed with the model as received (before training;\n"
           "with --epochs 0 and no -o, only these):\n"
           "      --gradients G    CReFF/CLIP2FL: per-class gradients of a head on this data\n"
           "                       (kind gradients; docs/algorithms.md 3 step 3a): BN in eval\n"
           "                       mode, DSA augmentation, --grad-repeats x --grad-batch images\n"
           "      --grad-head H    the head (fc) to take them with: the previous round's retrained\n"
           "                       model (default: the model's own fc)\n"
           "      --grad-repeats N repeats per class (default 10)   --grad-batch B (default 32)\n"
           "      --prototypes P   FedSM: per-class mean features and counts (kind prototypes;\n"
           "                       docs/algorithms.md 5.4 step 1) of the model on this data\n"
           "      --proto-bn MODE  BatchNorm for them: eval (default) or train (the reference's)\n"
           "  -q, --quiet / -v, --verbose / -h, --help / -V, --version\n\n"
           "example: local-train -m round-000/model.mpk.zst -d shards/client-03.mpk.zst \\\n"
           "           --epochs 10 --batch 32 --lr 0.1 -o round-001/update-03.mpk.zst\n"
           "exit: 0 ok, 1 runtime (loss became NaN), 2 usage, 3 bad input, 4 I/O\n");
    exit(0);
}

/* The teacher record for this shard: a stream (clip-embed writes an `embeddings` record and
 * one `teacher` per shard) is searched for the teacher whose meta.client is the shard's. */
static record *find_teacher(const char *path, const shard *s, const ep_opts *o)
{
    rec_reader *rd = ep_open_reader(path, o);
    if (!rd)
        tool_fail(err_last());
    record *r, *hit = NULL;
    int rc, n_teachers = 0;
    while (!hit && (rc = rec_read(rd, &r)) == 1) {
        int64_t client = INT64_MIN;
        if (strcmp(r->kind, "teacher") == 0) {
            n_teachers++;
            rec_opt_int(r, "client", &client);
        }
        if (client == s->client)
            hit = r;
        else
            rec_free(r);
    }
    if (hit) /* the rest of the stream is read too: a cut or miscounted stream is refused */
        rc = rec_read_rest(rd);
    if (rc < 0)
        tool_fail(rc);
    rec_reader_close(rd);
    if (!hit)
        tool_die(ERR_FORMAT, "%s holds no teacher record for client %lld (%d teacher records)",
                 path, (long long)s->client, n_teachers);
    return hit;
}

/* teacher logits row for each shard sample, matched by dataset index (teacher.h) */
static float *teacher_logits(const char *path, const shard *s, int classes, const ep_opts *o)
{
    record *t = find_teacher(path, s, o);
    float *out = malloc((size_t)(s->n ? s->n : 1) * (size_t)classes * sizeof *out);
    if (!out)
        tool_die(ERR_INTERNAL, "out of memory for the teacher logits of %lld samples",
                 (long long)s->n);
    if (teacher_rows(out, t, s->index, s->n, classes))
        tool_fail(err_last());
    rec_free(t);
    return out;
}

/* --gradients: CReFF/CLIP2FL's per-class head gradients on the shard (classgrad.h), with
 * the model's body and the head of hpath (NULL: the model's own fc). */
static void write_gradients(const char *path, model *m, const record *grec, const char *hpath,
                            const shard *s, const float *mean, const float *std, int repeats,
                            int batch, uint64_t seed, int64_t round, int64_t client,
                            const ep_opts *o)
{
    int C = m->cfg.num_classes, D = m->feat_dim;
    record *h = hpath ? ep_read_one(hpath, NULL, o) : NULL;
    if (hpath && !h)
        tool_fail(err_last());
    if (h && strcmp(h->kind, "model") && strcmp(h->kind, "update"))
        tool_die(ERR_FORMAT, "wrong record kind (stream %s, record %ld, field kind): expected "
                 "model or update, got %s", h->src, h->index, h->kind);
    if (h && (model_check_record(h) || model_check_meta(m, h))) /* finite, of this model */
        tool_fail(err_wrap(ERR_FORMAT, "--grad-head"));
    const record *hr = h ? h : grec;
    const tensor *hw = rec_get(hr, "fc.weight", DT_F32, 2, (int64_t[]){C, D});
    const tensor *hb = hw ? rec_get(hr, "fc.bias", DT_F32, 1, (int64_t[]){C}) : NULL;
    if (!hb)
        tool_fail(err_last());
    for (int64_t i = 0; i < (int64_t)C * D + C; i++) {
        float v = i < (int64_t)C * D ? ((const float *)hw->data)[i] : ((const float *)hb->data)[i - (int64_t)C * D];
        if (!isfinite(v))
            tool_die(ERR_FORMAT, "the head of %s holds %g (tensor %s): not finite", hr->src, v,
                     i < (int64_t)C * D ? "fc.weight" : "fc.bias");
    }
    double t0 = tool_now();
    classgrad *g = classgrad_client(m, hw->data, hb->data, s, mean, std, repeats, batch, seed,
                                    round, client);
    if (!g)
        tool_fail(err_last());
    const char **names = NULL;
    size_t nn = 0;
    if (mv_map_get(grec->meta, "classes") && rec_get_strs(grec, "classes", &names, &nn))
        tool_fail(err_last());
    record *r = rec_new("gradients");
    inputs in;
    inputs_init(&in);
    inputs_add_file(&in, grec->src);
    if (hpath)
        inputs_add_file(&in, hpath);
    inputs_add_option_int(&in, "repeats", repeats);
    inputs_add_option_int(&in, "batch", batch);
    inputs_add_option_int(&in, "round", round);
    inputs_add_option_int(&in, "client", client);
    inputs_add_option_int(&in, "seed", (int64_t)seed);
    if (!r || classgrad_to_record(g, r, round, client, repeats, batch, names && (int)nn == C ? names : NULL) ||
        rec_set_str(r, "producer", "local-train " FEDSM_VERSION) || inputs_set(&in, r) ||
        ep_write_one(path, r, o))
        tool_fail(err_last());
    tool_log(1, "client %lld round %lld: gradients of %d classes (%d x %d images each, %.1f s)",
             (long long)client, (long long)round, g->k, repeats, batch, tool_now() - t0);
    free(names);
    rec_free(r);
    classgrad_free(g);
    rec_free(h);
}

/* --prototypes: FedSM's per-class mean features and counts of the model on the shard
 * (proto.h).  Train-mode BatchNorm changes running statistics: it runs on a copy. */
static void write_prototypes(const char *path, const record *grec, const shard *s,
                             const float *mean, const float *std, int bn_train, uint64_t seed,
                             int64_t client, const ep_opts *o)
{
    model *m = model_from_record(grec);
    if (!m)
        tool_fail(err_last());
    int C = m->cfg.num_classes, D = m->feat_dim;
    int64_t round = 0;
    rec_opt_int(grec, "round", &round);
    double t0 = tool_now();
    float *feats = NULL, *means = malloc((size_t)C * (size_t)D * sizeof *means);
    int32_t *labels = NULL;
    int64_t *counts = malloc((size_t)C * sizeof *counts);
    if (!means || !counts)
        tool_die(ERR_INTERNAL, "out of memory for %d prototypes", C);
    if (proto_features(&feats, &labels, m, s, mean, std, bn_train) ||
        proto_class_means(means, counts, feats, labels, s->n, D, C))
        tool_fail(err_last());
    record *r = rec_new("prototypes");
    inputs in;
    inputs_init(&in);
    inputs_add_file(&in, grec->src);
    inputs_add_option_int(&in, "bn_train", bn_train);
    inputs_add_option_int(&in, "client", client);
    if (!r || proto_to_record(r, means, counts, C, D, round, client, bn_train ? "train" : "eval") ||
        rec_set_int(r, "num_samples", s->n) || rec_set_int(r, "seed", (int64_t)seed) ||
        rec_set_str(r, "producer", "local-train " FEDSM_VERSION) || inputs_set(&in, r) ||
        ep_write_one(path, r, o))
        tool_fail(err_last());
    tool_log(1, "client %lld round %lld: prototypes of %lld samples (BN %s, %.1f s)",
             (long long)client, (long long)round, (long long)s->n, bn_train ? "train" : "eval",
             tool_now() - t0);
    rec_free(r);
    free(feats);
    free(labels);
    free(means);
    free(counts);
    model_free(m);
}

int main(int argc, char **argv)
{
    tool_init("local-train");
    const char *grad_out = NULL, *grad_head = NULL, *proto_out = NULL;
    int64_t grad_repeats = 10, grad_batch = 32;
    int proto_bn_train = 0;
    const char *gpath = NULL, *spath = NULL, *out = NULL, *tpath = NULL, *aug = "batch";
    int64_t epochs = 10, batch = 32, round = -1, client = -1;
    double lr = 0.1, mom = 0, wd = 0, kd_alpha = 1.0, kd_t = 3.0;
    tool_common co = {.usage = usage, .seed = 7};
    ep_opts o;
    ep_opts_default(&o);
    o.timeout_ms = 600000;
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},  {"shard", required_argument, 0, 'd'},
        {"teacher", required_argument, 0, 'T'},
        {"kd-alpha", required_argument, 0, 'A'}, {"kd-temp", required_argument, 0, 'K'},
        {"epochs", required_argument, 0, 'e'}, {"batch", required_argument, 0, 'b'},
        {"lr", required_argument, 0, 'L'},     {"momentum", required_argument, 0, 'U'},
        {"wd", required_argument, 0, 'W'},     {"aug", required_argument, 0, 'G'},
        {"round", required_argument, 0, 'R'},  {"client", required_argument, 0, 'C'},
        {"timeout", required_argument, 0, 'O'}, {"in", required_argument, 0, 'd'},
        {"gradients", required_argument, 0, 0x100}, {"grad-head", required_argument, 0, 0x101},
        {"grad-repeats", required_argument, 0, 0x102}, {"grad-batch", required_argument, 0, 0x103},
        {"prototypes", required_argument, 0, 0x104}, {"proto-bn", required_argument, 0, 0x105},
        {0, 0, 0, 0}};
    int c;
    while ((c = tool_getopt(argc, argv, "m:d:e:b:", lo, &co)) != -1) {
        switch (c) {
        case 'm': gpath = optarg; break;
        case 'd': spath = optarg; break;
        case 'T': tpath = optarg; break;
        case 'A': kd_alpha = tool_parse_double("--kd-alpha", optarg, 0, 1e6); break;
        case 'K': kd_t = tool_parse_double("--kd-temp", optarg, 1e-3, 1e6); break;
        case 'e': epochs = tool_parse_int("--epochs", optarg, 0, 1000000); break;
        case 'b': batch = tool_parse_int("--batch", optarg, 1, 1 << 20); break;
        case 'L': lr = tool_parse_double("--lr", optarg, 0, 1e6); break;
        case 'U': mom = tool_parse_double("--momentum", optarg, 0, 1); break;
        case 'W': wd = tool_parse_double("--wd", optarg, 0, 1e3); break;
        case 'G': aug = optarg; break;
        case 'R': round = tool_parse_int("--round", optarg, 0, MODEL_ROUND_MAX); break;
        case 'C': client = tool_parse_int("--client", optarg, -1, INT32_MAX); break;
        case 'O': o.timeout_ms = (int)(1000 * tool_parse_double("--timeout", optarg, 0, 1e6)); break;
        case 0x100: grad_out = optarg; break;
        case 0x101: grad_head = optarg; break;
        case 0x102: grad_repeats = tool_parse_int("--grad-repeats", optarg, 1, 1000000); break;
        case 0x103: grad_batch = tool_parse_int("--grad-batch", optarg, 1, 1 << 20); break;
        case 0x104: proto_out = optarg; break;
        case 0x105:
            if (strcmp(optarg, "eval") && strcmp(optarg, "train"))
                tool_usage_error("--proto-bn '%s': eval or train", optarg);
            proto_bn_train = !strcmp(optarg, "train");
            break;
        }
    }
    out = co.out;
    uint64_t seed = co.seed;
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (!gpath || !spath)
        tool_usage_error("need --model and --shard");
    if (!out && (epochs > 0 || (!grad_out && !proto_out)))
        tool_usage_error("no output: give -o UPDATE (or --epochs 0 with --gradients or --prototypes)");
    if (grad_head && !grad_out)
        tool_usage_error("--grad-head goes with --gradients");
    int aug_mode = !strcmp(aug, "batch") ? 0 : !strcmp(aug, "sample") ? 1 : !strcmp(aug, "none") ? 2 : -1;
    if (aug_mode < 0)
        tool_usage_error("--aug must be batch, sample or none, not '%s'", aug);
    const char *outs[] = {out, grad_out, proto_out}; /* a bad output fails now, not after training */
    for (int i = 0; i < 3; i++)
        if (outs[i] && ep_check_writer(outs[i]))
            tool_fail(err_last());

    record *grec = ep_read_one(gpath, "model", &o);
    if (!grec)
        tool_fail(err_last());
    model *m = model_from_record(grec);
    if (!m)
        tool_fail(err_last());
    shard *s = shard_load(spath, &o);
    if (!s)
        tool_fail(err_last());
    int C = m->cfg.num_classes;
    if (shard_check_fits(s, spath, C, m->cfg.in_channels, m->cfg.input_size, m->cfg.input_size))
        tool_fail(err_last());
    float mean[3], std[3];
    if (meta_get_vec3(grec, "mean", mean) || meta_get_vec3(grec, "std", std) ||
        norm_check_shard(grec, s->rec))
        tool_fail(err_last());
    if (classes_check(grec, "the global model", s->rec, "the shard")) /* not only as many */
        tool_fail(err_last());
    if (round < 0) {
        int64_t gr = 0;
        rec_opt_int(grec, "round", &gr);
        round = gr + 1;
    }
    if (client < 0)
        client = s->client;
    if (grad_out)
        write_gradients(grad_out, m, grec, grad_head, s, mean, std, (int)grad_repeats,
                        (int)grad_batch, seed, round, client, &o);
    if (proto_out)
        write_prototypes(proto_out, grec, s, mean, std, proto_bn_train, seed, client, &o);
    if (!out) {
        shard_free(s);
        model_free(m);
        rec_free(grec);
        return 0;
    }
    float *teacher = tpath ? teacher_logits(tpath, s, C, &o) : NULL;

    /* encoded shards are transformed to the model's input size as they are decoded */
    int S = m->cfg.input_size;
    size_t img = s->bytes ? (size_t)3 * S * S : (size_t)s->c * (size_t)s->h * (size_t)s->w;
    int64_t bmax = batch < s->n ? batch : s->n; /* no batch holds more than the shard */
    float *x = aligned_alloc64((size_t)bmax * img * sizeof *x);
    float *xa = s->bytes ? NULL : aligned_alloc64((size_t)bmax * img * sizeof *xa);
    uint64_t *seeds = malloc((size_t)bmax * sizeof *seeds);
    float *tb = teacher ? malloc((size_t)bmax * (size_t)C * sizeof *tb) : NULL;
    int32_t *yb = malloc((size_t)bmax * sizeof *yb);
    int64_t *perm = malloc((size_t)s->n * sizeof *perm);
    if (!x || (!xa && !s->bytes) || !seeds || !yb || !perm || (teacher && !tb))
        tool_die(ERR_INTERNAL, "out of memory for a batch of %lld images (--batch %lld): give a "
                 "smaller --batch", (long long)bmax, (long long)batch);
    rng rs, ra;
    rng_init(&rs, seed, "shuffle", round, client);
    rng_init(&ra, seed, "augment", round, client);
    for (int64_t i = 0; i < s->n; i++)
        perm[i] = i;
    double t0 = tool_now(), last_loss = NAN;
    for (int64_t e = 0; e < epochs && s->n > 0; e++) {
        rng_shuffle_i64(&rs, perm, (size_t)s->n);
        double loss_sum = 0, te = tool_now();
        int64_t seen = 0;
        for (int64_t b0 = 0; b0 < s->n; b0 += batch) {
            int nb = (int)(s->n - b0 < batch ? s->n - b0 : batch);
            const float *in = x;
            if (s->bytes) { /* ImageNet transforms per image (docs/algorithms.md 1.5) */
                for (int i = 0; i < nb && aug_mode != 2; i++)
                    seeds[i] = rng_u64(&ra);
                if (shard_gather_encoded(x, s, perm + b0, nb, S, aug_mode != 2 ? seeds : NULL,
                                         mean, std))
                    tool_fail(err_last());
            } else {
                shard_gather(x, s, perm + b0, nb, mean, std);
                if (aug_mode != 2) {
                    imgaug_random_crop_flip(xa, x, nb, s->c, s->h, s->w, 4, aug_mode == 1, &ra);
                    in = xa;
                }
            }
            for (int i = 0; i < nb; i++) {
                yb[i] = s->labels[perm[b0 + i]];
                if (tb)
                    memcpy(tb + (size_t)i * C, teacher + perm[b0 + i] * C, (size_t)C * sizeof *tb);
            }
            float loss;
            model_zero_grad(m);
            if (model_train_step_grads(m, in, yb, tb, nb, (float)kd_t, (float)kd_alpha, &loss))
                tool_fail(err_wrap(err_last(), "a batch of %d images (--batch %lld)", nb,
                                   (long long)batch));
            if (!isfinite(loss))
                tool_die(ERR_RUNTIME,
                         "loss became %g in epoch %lld (client %lld); lower --lr?", loss,
                         (long long)e + 1, (long long)client);
            model_sgd_step(m, (float)lr, (float)mom, (float)wd);
            loss_sum += (double)loss * nb;
            seen += nb;
            tool_progress("client %lld epoch %lld/%lld  %lld/%lld  loss %.4f  %.0f img/s",
                          (long long)client, (long long)e + 1, (long long)epochs,
                          (long long)seen, (long long)s->n, loss_sum / (double)seen,
                          (double)seen / (tool_now() - te));
        }
        last_loss = loss_sum / (double)seen;
        tool_progress_done();
        tool_log(2, "client %lld epoch %lld/%lld loss %.4f %.0f img/s", (long long)client,
                 (long long)e + 1, (long long)epochs, last_loss,
                 (double)seen / (tool_now() - te));
    }
    double dt = tool_now() - t0;
    tool_log(1, "client %lld round %lld: %lld samples x %lld epochs, loss %.4f, %.1f s (%.0f img/s)",
             (long long)client, (long long)round, (long long)s->n, (long long)epochs, last_loss,
             dt, dt > 0 ? (double)(s->n * epochs) / dt : 0.0);

    record *u = rec_new("update");
    if (!u || model_to_record(m, u, REC_BORROW))
        tool_fail(err_last());
    /* the global model's classes and normalisation carry over (model_to_record writes the
     * architecture's default mean/std) */
    for (const char *const *k = (const char *const[]){"classes", "mean", "std", NULL}; *k; k++) {
        const mval *v = mv_map_get(grec->meta, *k);
        mval cp;
        if (v && (mv_copy(&cp, v) || mv_map_put(u->meta, *k, &cp)))
            tool_fail(ERR_INTERNAL);
    }
    inputs in; /* the global model, the shard, the teacher; the options that change it */
    inputs_init(&in);
    inputs_add_file(&in, gpath);
    inputs_add_file(&in, spath);
    if (tpath)
        inputs_add_file(&in, tpath);
    inputs_add_option_int(&in, "epochs", epochs);
    inputs_add_option_int(&in, "batch", batch);
    inputs_add_option_float(&in, "lr", lr);
    inputs_add_option_float(&in, "momentum", mom);
    inputs_add_option_float(&in, "wd", wd);
    inputs_add_option(&in, "aug", aug);
    inputs_add_option_int(&in, "round", round);
    inputs_add_option_int(&in, "client", client);
    inputs_add_option_int(&in, "seed", (int64_t)seed);
    if (tpath) {
        inputs_add_option_float(&in, "kd_alpha", kd_alpha);
        inputs_add_option_float(&in, "kd_temp", kd_t);
    }
    if (rec_set_int(u, "client", client) || rec_set_int(u, "round", round) ||
        rec_set_int(u, "num_samples", s->n) || rec_set_float(u, "loss", last_loss) ||
        rec_set_int(u, "epochs", epochs) || rec_set_int(u, "batch", batch) ||
        rec_set_float(u, "lr", lr) || rec_set_int(u, "seed", (int64_t)seed) ||
        (teacher && (rec_set_float(u, "kd_alpha", kd_alpha) || rec_set_float(u, "kd_temp", kd_t))) ||
        rec_set_str(u, "producer", "local-train " FEDSM_VERSION) || inputs_set(&in, u))
        tool_fail(err_last());
    if (ep_write_one(out, u, &o))
        tool_fail(err_last());
    rec_free(u);
    aligned_free(x);
    aligned_free(xa);
    free(seeds);
    free(tb);
    free(yb);
    free(perm);
    free(teacher);
    shard_free(s);
    model_free(m);
    rec_free(grec);
    return 0;
}
