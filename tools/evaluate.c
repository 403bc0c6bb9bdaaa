/* evaluate - test a global model on the balanced test shard (docs/algorithms.md 1.8): top-1, per-
 * class accuracy, many/medium/few (training counts > 100 / 20..100 / < 20, from the
 * partition record), mean cross-entropy, confusion matrix.  Writes a `metrics` record, a
 * CSV row (column top1 is a fraction) and/or a JSON line.  Eval-mode BatchNorm.
 * Encoded (JPEG/PNG) test shards are decoded batch by batch and go through torchvision's
 * eval transform (Resize, CenterCrop; imgaug.h).  --head swaps in a retrained classifier
 * (CReFF/CLIP2FL/FedSM).  Not a trainer. */
#include "endpoint.h"
#include "err.h"
#include "model.h"
#include "nn.h"
#include "pool.h"
#include "shard.h"
#include "tool.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Noreturn static void usage(void)
{
    printf("usage: evaluate --model M --test TEST [options]\n"
           "Top-1 and per-class accuracy of model M on the test shard.\n\n"
           "  -m, --model M        model (kind model)\n"
           "      --test TEST      test shard (kind shard; partition's test.mpk.zst); encoded\n"
           "                       (JPEG/PNG) images get Resize(256/224 x input) + CenterCrop\n"
           "  -p, --partition P    partition record: training class counts for many/medium/few\n"
           "                       (many > 100, medium 20..100, few < 20 training images)\n"
           "      --head H         replace the classifier (fc.weight, fc.bias) with H's\n"
           "      --csv FILE       append a CSV row (header when the file is new)\n"
           "      --json FILE      append a JSON line\n"
           "  -o, --out METRICS    write a metrics record\n"
           "      --label NAME     a method/run label for the CSV/JSON rows\n"
           "  -b, --batch B        batch size (default 500)\n"
           "  -t, --threads N      compute threads (default 1; 0 = all cores)\n"
           "  -q, --quiet / -v, --verbose (-v prints per-class accuracy)\n"
           "  -h, --help / -V, --version\n\n"
           "example: evaluate -m round-010/model.mpk.zst --test test.mpk.zst \\\n"
           "           -p partition.mpk.zst --csv metrics.csv\n"
           "CSV columns: label,round,top1,loss,many,medium,few,n\n"
           "exit: 0 ok, 2 usage, 3 bad input, 4 I/O\n");
    exit(0);
}

/* Appends text to path with one write (O_APPEND), header first when the file is empty. */
static void append_line(const char *path, const char *header, const char *line)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0)
        tool_die(ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    char buf[8192];
    int n = snprintf(buf, sizeof buf, "%s%s", fstat(fd, &st) == 0 && st.st_size == 0 && header ? header : "", line);
    if (write(fd, buf, (size_t)n) != n || close(fd))
        tool_die(ERR_IO, "cannot write %s: %s", path, strerror(errno));
}

static void fmt_frac(char *b, size_t n, double v)
{
    if (isnan(v))
        b[0] = 0;
    else
        snprintf(b, n, "%.4f", v);
}

int main(int argc, char **argv)
{
    tool_init("evaluate");
    const char *mpath = NULL, *tpath = NULL, *ppath = NULL, *hpath = NULL, *csv = NULL,
               *json = NULL, *out = NULL, *label = "";
    int64_t batch = 500;
    ep_opts o;
    ep_opts_default(&o);
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},  {"test", required_argument, 0, 'T'},
        {"partition", required_argument, 0, 'p'}, {"head", required_argument, 0, 'H'},
        {"csv", required_argument, 0, 'C'},    {"json", required_argument, 0, 'J'},
        {"out", required_argument, 0, 'o'},    {"label", required_argument, 0, 'L'},
        {"batch", required_argument, 0, 'b'},  {"threads", required_argument, 0, 't'},
        {"in", required_argument, 0, 'm'},     {"seed", required_argument, 0, 's'},
        {"quiet", no_argument, 0, 'q'},        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},         {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:p:o:b:t:s:qvhV", lo, NULL)) != -1) {
        switch (c) {
        case 'm': mpath = optarg; break;
        case 'T': tpath = optarg; break;
        case 'p': ppath = optarg; break;
        case 'H': hpath = optarg; break;
        case 'C': csv = optarg; break;
        case 'J': json = optarg; break;
        case 'o': out = optarg; break;
        case 'L': label = optarg; break;
        case 'b': batch = tool_parse_int("--batch", optarg, 1, 1 << 20); break;
        case 't': tool_set_threads((int)tool_parse_int("--threads", optarg, 0, 1024)); break;
        case 's': (void)tool_parse_seed("--seed", optarg); break; /* evaluation draws nothing */
        case 'q': tool_verbosity = 0; break;
        case 'v': tool_verbosity++; break;
        case 'h': usage();
        case 'V': tool_version();
        default: tool_usage_error("unknown option");
        }
    }
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (!mpath || !tpath)
        tool_usage_error("need --model and --test");
    if (!csv && !json && !out && tool_verbosity < 1)
        tool_usage_error("nothing to report: give --csv, --json or -o (or drop -q)");
    pool_set_threads(tool_threads());

    record *mrec = ep_read_one(mpath, "model", &o);
    if (!mrec)
        tool_fail(err_last());
    model *m = model_from_record(mrec);
    if (!m)
        tool_fail(err_last());
    int C = m->cfg.num_classes;
    if (hpath) {
        record *h = ep_read_one(hpath, NULL, &o);
        if (!h)
            tool_fail(err_last());
        const tensor *hw = rec_get(h, "fc.weight", DT_F32, 2, (int64_t[]){C, m->feat_dim});
        const tensor *hb = hw ? rec_get(h, "fc.bias", DT_F32, 1, (int64_t[]){C}) : NULL;
        if (!hb)
            tool_fail(err_last());
        memcpy(model_param(m, "fc.weight"), hw->data, hw->nbytes);
        memcpy(model_param(m, "fc.bias"), hb->data, hb->nbytes);
        rec_free(h);
    }
    shard *s = shard_load(tpath, &o);
    if (!s)
        tool_fail(err_last());
    if (shard_check_fits(s, tpath, C, m->cfg.in_channels, m->cfg.input_size, m->cfg.input_size))
        tool_fail(err_last());
    float mean[3], std[3];
    if (meta_get_vec3(mrec, "mean", mean) || meta_get_vec3(mrec, "std", std))
        tool_fail(err_last());
    int64_t *train_counts = NULL;
    if (ppath) {
        record *p = ep_read_one(ppath, "partition", &o);
        if (!p)
            tool_fail(err_last());
        const tensor *cc = rec_get(p, "class_counts", DT_I64, 1, (int64_t[]){C});
        if (!cc)
            tool_fail(err_last());
        train_counts = malloc((size_t)C * sizeof *train_counts);
        memcpy(train_counts, cc->data, (size_t)C * sizeof *train_counts);
        rec_free(p);
    }

    /* encoded shards: Resize + CenterCrop to the model's input size as they are decoded */
    int S = m->cfg.input_size;
    size_t img = s->bytes ? (size_t)3 * S * S : (size_t)s->c * (size_t)s->h * (size_t)s->w;
    float *x = aligned_alloc64((size_t)batch * img * sizeof *x);
    float *probs = malloc((size_t)batch * (size_t)C * sizeof *probs);
    int64_t *rows = malloc((size_t)batch * sizeof *rows);
    int64_t *conf = calloc((size_t)C * (size_t)C, sizeof *conf);
    if (!x || !probs || !rows || !conf)
        tool_die(ERR_INTERNAL, "out of memory");
    double loss_sum = 0, t0 = tool_now();
    int64_t correct = 0;
    for (int64_t b0 = 0; b0 < s->n; b0 += batch) {
        int nb = (int)(s->n - b0 < batch ? s->n - b0 : batch);
        for (int i = 0; i < nb; i++)
            rows[i] = b0 + i;
        if (s->bytes) {
            if (shard_gather_encoded(x, s, rows, nb, S, NULL, mean, std))
                tool_fail(err_last());
        } else {
            shard_gather(x, s, rows, nb, mean, std);
        }
        const float *logits = model_forward(m, x, nb, 0);
        if (!logits)
            tool_fail(err_last());
        loss_sum += (double)nn_cross_entropy_forward(probs, logits, s->labels + b0, nb, C) * nb;
        for (int i = 0; i < nb; i++) {
            const float *l = logits + (size_t)i * C;
            int best = 0;
            for (int k = 1; k < C; k++)
                if (l[k] > l[best])
                    best = k;
            int y = s->labels[b0 + i];
            conf[(size_t)y * C + best]++;
            correct += best == y;
        }
        tool_progress("%lld/%lld images", (long long)(b0 + nb), (long long)s->n);
    }
    tool_progress_done();
    double top1 = s->n ? (double)correct / (double)s->n : NAN;
    double loss = s->n ? loss_sum / (double)s->n : NAN;
    float *per_class = malloc((size_t)C * sizeof *per_class);
    double grp_sum[3] = {0}, grp_n[3] = {0}; /* many, medium, few: mean of per-class acc */
    for (int k = 0; k < C; k++) {
        int64_t tot = 0;
        for (int j = 0; j < C; j++)
            tot += conf[(size_t)k * C + j];
        per_class[k] = tot ? (float)conf[(size_t)k * C + k] / (float)tot : NAN;
        if (train_counts && tot) {
            int g = train_counts[k] > 100 ? 0 : train_counts[k] >= 20 ? 1 : 2;
            grp_sum[g] += per_class[k];
            grp_n[g] += 1;
        }
    }
    double grp[3];
    for (int g = 0; g < 3; g++)
        grp[g] = grp_n[g] ? grp_sum[g] / grp_n[g] : NAN;
    int64_t round = -1;
    rec_opt_int(mrec, "round", &round);
    char fm[3][16];
    for (int g = 0; g < 3; g++)
        fmt_frac(fm[g], sizeof fm[g], grp[g]);
    tool_log(1, "%s%sround %lld: top1 %.4f  many %s  medium %s  few %s  loss %.4f  (%lld images, %.1f s)",
             label, *label ? " " : "", (long long)round, top1, fm[0][0] ? fm[0] : "-",
             fm[1][0] ? fm[1] : "-", fm[2][0] ? fm[2] : "-", loss, (long long)s->n,
             tool_now() - t0);
    if (tool_verbosity >= 2)
        for (int k = 0; k < C; k++)
            tool_log(2, "class %d: %.4f (train count %lld)", k, per_class[k],
                     train_counts ? (long long)train_counts[k] : -1LL);
    if (csv) {
        char line[512];
        snprintf(line, sizeof line, "%s,%lld,%.6f,%.6f,%s,%s,%s,%lld\n", label, (long long)round,
                 top1, loss, fm[0], fm[1], fm[2], (long long)s->n);
        append_line(csv, "label,round,top1,loss,many,medium,few,n\n", line);
    }
    if (json) {
        char line[8192];
        int at = snprintf(line, sizeof line,
                          "{\"label\":\"%s\",\"round\":%lld,\"top1\":%.6f,\"loss\":%.6f,", label,
                          (long long)round, top1, loss);
        const char *gn[3] = {"many", "medium", "few"};
        for (int g = 0; g < 3; g++)
            at += snprintf(line + at, sizeof line - (size_t)at, "\"%s\":%s,", gn[g],
                           fm[g][0] ? fm[g] : "null");
        at += snprintf(line + at, sizeof line - (size_t)at, "\"n\":%lld,\"per_class\":[",
                       (long long)s->n);
        for (int k = 0; k < C && at < (int)sizeof line - 32; k++)
            at += snprintf(line + at, sizeof line - (size_t)at, "%s%.4f", k ? "," : "",
                           isnan(per_class[k]) ? -1.0 : per_class[k]);
        snprintf(line + at, sizeof line - (size_t)at, "]}\n");
        append_line(json, NULL, line);
    }
    if (out) {
        record *r = rec_new("metrics");
        rec_add(r, "per_class", DT_F32, 1, (int64_t[]){C}, per_class, REC_BORROW);
        rec_add(r, "confusion", DT_I64, 2, (int64_t[]){C, C}, conf, REC_BORROW);
        rec_set_int(r, "round", round);
        rec_set_float(r, "top1", top1);
        rec_set_float(r, "loss", loss);
        rec_set_float(r, "many", grp[0]);
        rec_set_float(r, "medium", grp[1]);
        rec_set_float(r, "few", grp[2]);
        rec_set_int(r, "n", s->n);
        rec_set_str(r, "label", label);
        rec_set_str(r, "model", mpath);
        rec_set_str(r, "producer", "evaluate " FEDSM_VERSION);
        if (ep_write_one(out, r, &o))
            tool_fail(err_last());
        rec_free(r);
    }
    free(per_class);
    free(x);
    free(probs);
    free(rows);
    free(conf);
    free(train_counts);
    shard_free(s);
    model_free(m);
    rec_free(mrec);
    return 0;
}
