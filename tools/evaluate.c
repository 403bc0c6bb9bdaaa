/* evaluate - test a global model on the balanced test shard (docs/algorithms.md 1.8): top-1, per-
 * class accuracy, many/medium/few (training counts > 100 / 20..100 / < 20, from the
 * partition record), mean cross-entropy, confusion matrix.  Writes a `metrics` record, a
 * CSV row (column top1 is a fraction) and/or a JSON line.  Eval-mode BatchNorm.
 * Encoded (JPEG/PNG) test shards are decoded batch by batch and go through torchvision's
 * eval transform (Resize, CenterCrop; imgaug.h).  --head swaps in a retrained classifier
 * (CReFF/CLIP2FL/FedSM).  Not a trainer. */
#include "classes.h"
#include "endpoint.h"
#include "err.h"
#include "inputs.h"
#include "model.h"
#include "nn.h"
#include "norm.h"
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
           "  -m, --model M        model (kind model, or an update: it holds every weight)\n"
           "      --test TEST      test shard (kind shard; partition's test.mpk.zst) of the\n"
           "                       model's classes (names checked when both name them); encoded\n"
           "                       (JPEG/PNG) images get Resize(256/224 x input) + CenterCrop\n"
           "  -p, --partition P    partition record: training class counts for many/medium/few\n"
           "                       (many > 100, medium 20..100, few < 20 training images)\n"
           "      --head H         replace the classifier (fc.weight, fc.bias) with H's\n"
           "      --csv FILE       append a CSV row (header when the file is new; RFC 4180)\n"
           "      --json FILE      append a JSON line\n"
           "                       (all outputs are written in full or not at all)\n"
           "  -o, --out METRICS    write a metrics record\n"
           "      --label NAME     a method/run label for the CSV/JSON rows\n"
           "  -b, --batch B        batch size (default 500)\n"
           "  -t, --threads N      compute threads (default 1; 0 = all cores)\n"
           "  -q, --quiet / -v, --verbose (-v prints each class's accuracy, by name)\n"
           "  -s, --seed S         accepted as by every tool; evaluation draws nothing\n"
           "  -h, --help / -V, --version\n\n"
           "example: evaluate -m round-010/model.mpk.zst --test test.mpk.zst \\\n"
           "           -p partition.mpk.zst --csv metrics.csv\n"
           "CSV columns: label,round,top1,loss,many,medium,few,n\n"
           "exit: 0 ok, 2 usage, 3 bad input, 4 I/O\n");
    exit(0);
}

/* An appended text output staged in path.tmp.PID: the old content, the header when there
 * was none, the new line.  Renamed over path only once every output was written. */
typedef struct {
    const char *path;
    char tmp[4096];
} staged;

static staged stages[2];
static int n_stages;

static void unstage_all(void)
{
    for (int i = 0; i < n_stages; i++)
        unlink(stages[i].tmp);
    n_stages = 0;
}

_Noreturn static void die_unstaged(int code)
{
    unstage_all();
    tool_fail(code);
}

static int stage_append(const char *path, const char *header, const char *line)
{
    staged *st = &stages[n_stages];
    st->path = path;
    snprintf(st->tmp, sizeof st->tmp, "%s.tmp.%ld", path, (long)getpid());
    int in = open(path, O_RDONLY);
    if (in < 0 && errno != ENOENT)
        return err_set(ERR_IO, "cannot read %s: %s", path, strerror(errno));
    struct stat sb;
    mode_t mode = in >= 0 && fstat(in, &sb) == 0 ? sb.st_mode & 07777 : 0644;
    int fd = open(st->tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0) {
        int e = errno;
        if (in >= 0)
            close(in);
        return err_set(ERR_IO, "cannot create %s: %s", st->tmp, strerror(e));
    }
    n_stages++;
    char buf[1 << 16];
    ssize_t n;
    off_t old = 0;
    bool ok = true;
    while (in >= 0 && ok && (n = read(in, buf, sizeof buf)) != 0) {
        ok = n > 0 && write(fd, buf, (size_t)n) == n;
        old += n > 0 ? n : 0;
    }
    if (in >= 0)
        close(in);
    if (ok && old == 0 && header)
        ok = write(fd, header, strlen(header)) == (ssize_t)strlen(header);
    ok = ok && write(fd, line, strlen(line)) == (ssize_t)strlen(line);
    if (close(fd) || !ok)
        return err_set(ERR_IO, "cannot write %s: %s", st->tmp, strerror(errno));
    return 0;
}

static void commit_stages(void)
{
    for (int i = 0; i < n_stages; i++)
        if (rename(stages[i].tmp, stages[i].path))
            tool_die(ERR_IO, "cannot rename %s to %s: %s", stages[i].tmp, stages[i].path,
                     strerror(errno));
    n_stages = 0;
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
    tool_common co = {.usage = usage}; /* --seed is accepted: evaluation draws nothing */
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},  {"test", required_argument, 0, 'T'},
        {"partition", required_argument, 0, 'p'}, {"head", required_argument, 0, 'H'},
        {"csv", required_argument, 0, 'C'},    {"json", required_argument, 0, 'J'},
        {"label", required_argument, 0, 'L'},  {"batch", required_argument, 0, 'b'},
        {"in", required_argument, 0, 'm'},     {0, 0, 0, 0}};
    int c;
    while ((c = tool_getopt(argc, argv, "m:p:b:", lo, &co)) != -1) {
        switch (c) {
        case 'm': mpath = optarg; break;
        case 'T': tpath = optarg; break;
        case 'p': ppath = optarg; break;
        case 'H': hpath = optarg; break;
        case 'C': csv = optarg; break;
        case 'J': json = optarg; break;
        case 'L': label = optarg; break;
        case 'b': batch = tool_parse_int("--batch", optarg, 1, 1 << 20); break;
        }
    }
    out = co.out;
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (!mpath || !tpath)
        tool_usage_error("need --model and --test");
    if (!csv && !json && !out && tool_verbosity < 1)
        tool_usage_error("nothing to report: give --csv, --json or -o (or drop -q)");
    if (out && ep_check_writer(out)) /* a bad -o fails now, not after the evaluation */
        tool_fail(err_last());
    if ((csv && ep_check_writer(csv)) || (json && ep_check_writer(json))) /* --csv, --json too */
        tool_fail(err_last());

    record *mrec = ep_read_one(mpath, NULL, &o); /* a model, or an update (every weight) */
    if (!mrec)
        tool_fail(err_last());
    if (strcmp(mrec->kind, "model") && strcmp(mrec->kind, "update"))
        tool_die(ERR_FORMAT, "wrong record kind (stream %s, record %ld, field kind): expected "
                 "model or update, got %s", mrec->src, mrec->index, mrec->kind);
    model *m = model_from_record(mrec);
    if (!m)
        tool_fail(err_last());
    int C = m->cfg.num_classes;
    if (hpath) {
        record *h = ep_read_one(hpath, NULL, &o);
        if (!h)
            tool_fail(err_last());
        if (strcmp(h->kind, "model") && strcmp(h->kind, "update"))
            tool_die(ERR_FORMAT, "wrong record kind (stream %s, record %ld, field kind): expected "
                     "model or update, got %s", h->src, h->index, h->kind);
        if (model_check_record(h) || model_check_meta(m, h)) /* finite, of this model */
            tool_fail(err_wrap(ERR_FORMAT, "--head"));
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
    if (meta_get_vec3(mrec, "mean", mean) || meta_get_vec3(mrec, "std", std) ||
        norm_check_shard(mrec, s->rec))
        tool_fail(err_last());
    /* as many classes is not enough: a test shard of other data is refused, not scored */
    if (classes_check(mrec, "the model", s->rec, "the test shard"))
        tool_fail(err_last());
    int64_t *train_counts = NULL;
    if (ppath) {
        record *p = ep_read_one(ppath, "partition", &o);
        if (!p)
            tool_fail(err_last());
        if (classes_check(mrec, "the model", p, "the partition"))
            tool_fail(err_last());
        const tensor *cc = rec_get(p, "class_counts", DT_I64, 1, (int64_t[]){C});
        if (!cc)
            tool_fail(err_last());
        train_counts = malloc((size_t)C * sizeof *train_counts);
        if (!train_counts)
            tool_die(ERR_INTERNAL, "out of memory");
        memcpy(train_counts, cc->data, (size_t)C * sizeof *train_counts);
        for (int k = 0; k < C; k++)
            if (train_counts[k] < 0)
                tool_die(ERR_FORMAT, "partition %s (record %ld, field tensors.class_counts[%d]): "
                         "%lld (a count is 0 or more)", ppath, p->index, k,
                         (long long)train_counts[k]);
        rec_free(p);
    }

    /* encoded shards: Resize + CenterCrop to the model's input size as they are decoded */
    int S = m->cfg.input_size;
    size_t img = s->bytes ? (size_t)3 * S * S : (size_t)s->c * (size_t)s->h * (size_t)s->w;
    int64_t bmax = batch < s->n ? batch : s->n; /* no batch holds more than the test set */
    float *x = aligned_alloc64((size_t)bmax * img * sizeof *x);
    float *probs = malloc((size_t)bmax * (size_t)C * sizeof *probs);
    int64_t *rows = malloc((size_t)bmax * sizeof *rows);
    int64_t *conf = calloc((size_t)C * (size_t)C, sizeof *conf);
    if (!x || !probs || !rows || !conf)
        tool_die(ERR_INTERNAL, "out of memory for a batch of %lld images (--batch %lld): give a "
                 "smaller --batch", (long long)bmax, (long long)batch);
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
            tool_fail(err_wrap(err_last(), "a batch of %d images (--batch %lld)", nb,
                               (long long)batch));
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
    double top1 = (double)correct / (double)s->n; /* s->n >= 1: shard_load refuses empty sets */
    double loss = loss_sum / (double)s->n;
    float *per_class = malloc((size_t)C * sizeof *per_class);
    if (!per_class)
        tool_die(ERR_INTERNAL, "out of memory");
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
    if (tool_verbosity >= 2) { /* per class, by name (the model's, else the shard's) */
        const char **names = NULL;
        size_t nn = 0;
        const record *nr = mv_map_get(mrec->meta, "classes") ? mrec : s->rec;
        if (mv_map_get(nr->meta, "classes") && rec_get_strs(nr, "classes", &names, &nn))
            tool_fail(err_last());
        for (int k = 0; k < C; k++) {
            int64_t tot = 0;
            for (int j = 0; j < C; j++)
                tot += conf[(size_t)k * C + j];
            char tc[48] = "";
            if (train_counts)
                snprintf(tc, sizeof tc, ", %lld training images", (long long)train_counts[k]);
            if (tot)
                tool_log(2, "class %d %s: %.2f %% of %lld test images%s", k,
                         (size_t)k < nn ? names[k] : "?", 100.0 * per_class[k], (long long)tot, tc);
            else
                tool_log(2, "class %d %s: no test images%s", k, (size_t)k < nn ? names[k] : "?", tc);
        }
        free(names);
    }
    /* every output is staged (CSV, JSON in temporaries, the record by ep_write_one's own
     * temporary); the staged files are renamed only when all were written */
    if (csv) {
        char *line = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&line, &len);
        if (!f)
            tool_die(ERR_INTERNAL, "out of memory");
        tool_csv_field(f, label);
        fprintf(f, ",%lld,%.6f,%.6f,%s,%s,%s,%lld\n", (long long)round, top1, loss, fm[0], fm[1],
                fm[2], (long long)s->n);
        if (fclose(f))
            tool_die(ERR_INTERNAL, "out of memory");
        if (stage_append(csv, "label,round,top1,loss,many,medium,few,n\n", line))
            die_unstaged(err_last());
        free(line);
    }
    if (json) {
        char *line = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&line, &len);
        if (!f)
            tool_die(ERR_INTERNAL, "out of memory");
        mval lv = mv_str(label);
        fputs("{\"label\":", f);
        mv_write_json(&lv, f); /* escaped */
        mv_clear(&lv);
        fprintf(f, ",\"round\":%lld,\"top1\":%.6f,\"loss\":%.6f,", (long long)round, top1, loss);
        const char *gn[3] = {"many", "medium", "few"};
        for (int g = 0; g < 3; g++)
            fprintf(f, "\"%s\":%s,", gn[g], fm[g][0] ? fm[g] : "null");
        fprintf(f, "\"n\":%lld,\"per_class\":[", (long long)s->n);
        for (int k = 0; k < C; k++)
            fprintf(f, "%s%.4f", k ? "," : "", isnan(per_class[k]) ? -1.0 : per_class[k]);
        fputs("]}\n", f);
        if (fclose(f))
            tool_die(ERR_INTERNAL, "out of memory");
        if (stage_append(json, NULL, line))
            die_unstaged(err_last());
        free(line);
    }
    if (out) {
        record *r = rec_new("metrics");
        inputs in; /* the model, the test shard, the partition, the head; the label */
        inputs_init(&in);
        inputs_add_file(&in, mpath);
        inputs_add_file(&in, tpath);
        if (ppath)
            inputs_add_file(&in, ppath);
        if (hpath)
            inputs_add_file(&in, hpath);
        inputs_add_option(&in, "label", label);
        if (!r || rec_add(r, "per_class", DT_F32, 1, (int64_t[]){C}, per_class, REC_BORROW) ||
            rec_add(r, "confusion", DT_I64, 2, (int64_t[]){C, C}, conf, REC_BORROW) ||
            rec_set_int(r, "round", round) || rec_set_float(r, "top1", top1) ||
            rec_set_float(r, "loss", loss) || rec_set_float(r, "many", grp[0]) ||
            rec_set_float(r, "medium", grp[1]) || rec_set_float(r, "few", grp[2]) ||
            rec_set_int(r, "n", s->n) || rec_set_str(r, "label", label) ||
            rec_set_str(r, "model", mpath) ||
            rec_set_str(r, "producer", "evaluate " FEDSM_VERSION) || inputs_set(&in, r))
            die_unstaged(err_last() ? err_last() : ERR_INTERNAL);
        if (ep_write_one(out, r, &o))
            die_unstaged(err_last());
        rec_free(r);
    }
    commit_stages();
    free(per_class);
    aligned_free(x);
    free(probs);
    free(rows);
    free(conf);
    free(train_counts);
    shard_free(s);
    model_free(m);
    rec_free(mrec);
    return 0;
}
