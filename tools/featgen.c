/* featgen - the features a classifier head is retrained on (the `features` record):
 *   --method creff | clip2fl   the server's federated features (docs/algorithms.md 3 step 6,
 *                              4.3): created once from N(0,1) and carried from round to
 *                              round; each round `--iters` SGD steps move them so that the
 *                              head's gradient on each class's features matches the clients'
 *                              averaged real gradient (aggregate --gradients), plus for
 *                              CLIP2FL beta times the prototype contrastive loss against
 *                              CLIP's class text embeddings (clip-embed).
 *   --method fedsm             a client's balanced pseudo-features (docs/algorithms.md 5.4
 *                              step 3): for every class, local features drawn by semantic
 *                              relevance, mixed with the global prototypes.
 * Not here: the head's training (retrain), the gradients and prototypes themselves
 * (local-train, aggregate).  The mechanisms: lib/fl/gradmatch.h, lib/fl/mixup.h,
 * lib/fl/proto.h, lib/fl/relevance.h. */
#include "classgrad.h"
#include "endpoint.h"
#include "err.h"
#include "gradmatch.h"
#include "head.h"
#include "inputs.h"
#include "mixup.h"
#include "model.h"
#include "norm.h"
#include "proto.h"
#include "relevance.h"
#include "rng.h"
#include "shard.h"
#include "tool.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn static void usage(void)
{
    printf("usage: featgen --method creff|clip2fl -m HEAD -g GRADIENTS [--features PREV] -o OUT\n"
           "       featgen --method fedsm -m MODEL -d SHARD -P PROTOTYPES -r RELEVANCE -o OUT\n"
           "Generate the labelled features a fresh classifier head is retrained on (kind features:\n"
           "features [N,D] <f4, labels [N] <i4).\n\n"
           "  -M, --method M       creff, clip2fl (server: federated features) or fedsm (client:\n"
           "                       pseudo-features)\n"
           "  -m, --model MODEL    creff/clip2fl: the model whose head (fc) the clients' gradients\n"
           "                       were taken with (the previous round's retrained model);\n"
           "                       fedsm: this round's global model (the features' body)\n"
           "  -o, --out OUT        the features (file, '-' or ZeroMQ endpoint)\n"
           "      --per-class M    features per class (default 100)\n"
           "      --round R        round (default: the model's round)\n"
           "  -s, --seed S         seed (default 7); streams keyed by (seed, round, client)\n"
           "creff / clip2fl:\n"
           "  -g, --gradients G    the averaged per-class gradients (aggregate --gradients)\n"
           "  -f, --features PREV  last round's features, updated here (absent: start from N(0,1),\n"
           "                       drawn from the stream (seed, \"featgen-init\", 0, 0))\n"
           "      --iters N        SGD steps on the features (default 100)\n"
           "      --lr LR          their learning rate (default 0.1)\n"
           "  -e, --embeddings E   clip2fl: clip-embed's embeddings record (tensor text [C,D])\n"
           "      --beta B         clip2fl: weight of the prototype contrastive loss (0.001)\n"
           "      --tau T          clip2fl: its temperature (default 0.1)\n"
           "fedsm:\n"
           "  -d, --shard SHARD    the client's data (its local features come from MODEL's body)\n"
           "  -P, --prototypes P   the global prototypes (aggregate --prototypes)\n"
           "  -r, --relevance REL  class relevance: an embeddings record with relevance [C,C]\n"
           "                       (clip-embed; its diagonal becomes the row mean here); not\n"
           "                       needed with --select uniform\n"
           "      --select MODE    prob (default: draws without replacement with probability\n"
           "                       proportional to S[c, label]), det (most relevant first),\n"
           "                       uniform (no semantics)\n"
           "      --temp T         prob with softmax(S[c,:]/T) weights (default 0: off)\n"
           "      --proto-bn MODE  BatchNorm for the local features: eval (default) or train\n"
           "      --client K       client id (default: the shard's meta.client)\n"
           "                       A client with fewer than --per-class samples uses each of them\n"
           "                       once per pass, in the selection's order, and starts a new pass\n"
           "                       until --per-class features are drawn.\n"
           "common: --threads N, -q, -v, -h/--help, -V/--version\n\n"
           "examples:\n"
           "  featgen --method creff -m round-004/retrained.mpk.zst -g round-005/gradients.mpk.zst \\\n"
           "          --features round-004/features.mpk.zst -o round-005/features.mpk.zst\n"
           "  featgen --method fedsm -m round-150/model.mpk.zst -d client-03.mpk.zst \\\n"
           "          -P round-150/prototypes.mpk.zst -r relevance.mpk.zst -o pseudo-03.mpk.zst\n"
           "exit: 0 ok, 1 runtime (features became NaN), 2 usage, 3 bad input, 4 I/O\n");
    exit(0);
}

typedef enum { M_CREFF, M_CLIP2FL, M_FEDSM } fg_method;
static const char *const method_names[] = {"creff", "clip2fl", "fedsm"};

typedef struct {
    fg_method method;
    const char *mpath, *gpath, *prev, *epath, *dpath, *ppath, *rpath;
    int per_class, bn_train;
    int64_t round, client;
    uint64_t seed;
    gradmatch_opts gm;
    mixup_opts mx;
    ep_opts ep;
} fg_args;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        tool_die(ERR_INTERNAL, "out of memory (%zu bytes)", n);
    return p;
}

/* The first record of `kind` in the stream at path: clip-embed with shards writes its
 * embeddings record and then one teacher record per shard into one stream (the CLIP file
 * clip2fl.sh makes once per run serves the teacher and the text embeddings).  Owned; NULL
 * with the error set. */
static record *read_first_kind(const char *path, const char *kind, const ep_opts *o)
{
    rec_reader *rd = ep_open_reader(path, o);
    if (!rd)
        return NULL;
    record *r = NULL;
    int rc;
    while ((rc = rec_read(rd, &r)) == 1 && strcmp(r->kind, kind)) {
        rec_free(r);
        r = NULL;
    }
    if (rc == 0)
        err_set(ERR_FORMAT, "%s holds no %s record", path, kind);
    else if (rc == 1 && rec_read_rest(rd) < 0) { /* a cut or miscounted rest is refused too */
        rec_free(r);
        rc = -1;
    }
    rec_reader_close(rd);
    return rc == 1 ? r : NULL;
}

/* A [C,C] or [C,E] tensor of an embeddings record, checked (relevance.h): points into r. */
static const float *emb_tensor(const record *r, const char *name, int64_t rows, int64_t cols,
                               const char *why)
{
    const float *v = NULL;
    if (relevance_tensor(r, name, rows, cols, &v))
        tool_die(ERR_FORMAT, "%s (%s)", err_msg(), why);
    return v;
}

/* When both records name their classes, the names must agree: a relevance matrix of other
 * classes (or in another order) would guide the draws silently wrong. */
static void check_classes(const record *a, const record *b)
{
    const char **x = NULL, **y = NULL;
    size_t nx = 0, ny = 0;
    if (!mv_map_get(a->meta, "classes") || !mv_map_get(b->meta, "classes"))
        return;
    if (rec_get_strs(a, "classes", &x, &nx) || rec_get_strs(b, "classes", &y, &ny))
        tool_fail(err_last());
    for (size_t i = 0; i < nx || i < ny; i++)
        if (i >= nx || i >= ny || strcmp(x[i], y[i]))
            tool_die(ERR_FORMAT, "%s and %s name other classes (class %zu: '%s' vs '%s', field meta.classes)",
                     a->src, b->src, i, i < nx ? x[i] : "(none)", i < ny ? y[i] : "(none)");
    free(x);
    free(y);
}

/* The server's federated features: read or create, update, return them in a new record. */
static record *run_match(const fg_args *a, const record *mrec, const model *m)
{
    int C = m->cfg.num_classes, D = m->feat_dim;
    const tensor *tw = rec_get(mrec, "fc.weight", DT_F32, 2, (int64_t[]){C, D});
    const tensor *tb = tw ? rec_get(mrec, "fc.bias", DT_F32, 1, (int64_t[]){C}) : NULL;
    if (!tb)
        tool_fail(err_last());
    record *gr = ep_read_one(a->gpath, "gradients", &a->ep);
    if (!gr)
        tool_fail(err_last());
    classgrad *real = classgrad_from_record(gr, C, D);
    if (!real)
        tool_fail(err_last());
    int64_t N;
    float *F;
    int32_t *y;
    if (a->prev) {
        record *pr = ep_read_one(a->prev, "features", &a->ep);
        if (!pr)
            tool_fail(err_last());
        const float *px;
        const int32_t *py;
        if (head_features_from_record(pr, C, D, &px, &py, &N))
            tool_fail(err_last());
        F = xmalloc((size_t)N * (size_t)D * sizeof *F);
        y = xmalloc((size_t)N * sizeof *y);
        memcpy(F, px, (size_t)N * (size_t)D * sizeof *F);
        memcpy(y, py, (size_t)N * sizeof *y);
        rec_free(pr);
    } else { /* round 1: N(0,1), labels 0..0, 1..1, ... (docs/algorithms.md 3) */
        N = (int64_t)C * a->per_class;
        F = xmalloc((size_t)N * (size_t)D * sizeof *F);
        y = xmalloc((size_t)N * sizeof *y);
        rng r;
        rng_init(&r, a->seed, "featgen-init", 0, 0);
        for (int64_t i = 0; i < N * D; i++)
            F[i] = (float)rng_normal(&r);
        for (int64_t i = 0; i < N; i++)
            y[i] = (int32_t)(i / a->per_class);
    }
    const float *text = NULL;
    record *er = NULL;
    if (a->method == M_CLIP2FL) {
        if (!(er = read_first_kind(a->epath, "embeddings", &a->ep)))
            tool_fail(err_last());
        check_classes(mrec, er);
        const tensor *t = rec_find(er, "text");
        if (t && t->ndim == 2 && t->shape[1] != D)
            tool_die(ERR_FORMAT, "CLIP text embeddings of %s have %lld dimensions, the features %d "
                                 "(make the model with --proj %lld)",
                     a->epath, (long long)t->shape[1], D, (long long)t->shape[1]);
        text = emb_tensor(er, "text", C, D, "clip2fl's prototype contrastive loss needs the class text embeddings");
    }
    /* the closed-form PCL equals the reference's SupCon when the text embeddings repeat as
     * often as each class has features (docs/algorithms.md 4.3) */
    gradmatch_opts gm = a->gm;
    gm.pcl_m = (int)(N / C > 0 ? N / C : 1);
    double l0 = NAN, l1 = NAN, t0 = tool_now();
    if (gradmatch_update(F, y, (int)N, D, tw->data, tb->data, C, real, text, &gm, &l0, &l1))
        tool_fail(err_last());
    tool_log(1, "round %lld: %s features [%lld,%d], %d classes with gradients, %d steps: loss %.4f -> %.4f (%.2f s)",
             (long long)a->round, method_names[a->method], (long long)N, D, real->k, a->gm.iters,
             l0, l1, tool_now() - t0);
    record *out = rec_new("features");
    if (!out || rec_add(out, "features", DT_F32, 2, (int64_t[]){N, D}, F, REC_COPY) ||
        rec_add(out, "labels", DT_I32, 1, (int64_t[]){N}, y, REC_COPY) ||
        rec_set_float(out, "loss_first", l0) || rec_set_float(out, "loss_last", l1) ||
        rec_set_int(out, "client", -1) || rec_set_int(out, "classes_matched", real->k))
        tool_fail(err_last());
    free(F);
    free(y);
    classgrad_free(real);
    rec_free(gr);
    rec_free(er);
    return out;
}

/* A client's pseudo-features (FedSM). */
static record *run_fedsm(fg_args *a, const record *mrec, model *m)
{
    int C = m->cfg.num_classes, D = m->feat_dim;
    shard *s = shard_load(a->dpath, &a->ep);
    if (!s)
        tool_fail(err_last());
    float mean[3], std[3];
    if (meta_get_vec3(mrec, "mean", mean) || meta_get_vec3(mrec, "std", std) ||
        norm_check_shard(mrec, s->rec)) /* the features come from the model's normalisation */
        tool_fail(err_last());
    if (a->client == INT64_MIN)
        a->client = s->client;
    record *pr = ep_read_one(a->ppath, "prototypes", &a->ep);
    if (!pr)
        tool_fail(err_last());
    const float *P;
    const int64_t *pc;
    if (proto_from_record(pr, C, D, &P, &pc))
        tool_fail(err_last());
    float *S = xmalloc((size_t)C * (size_t)C * sizeof *S);
    record *rr = NULL;
    if (a->mx.select == MIXUP_UNIFORM && !a->rpath) {
        for (size_t i = 0; i < (size_t)C * (size_t)C; i++)
            S[i] = 1.0f;
    } else {
        if (!(rr = read_first_kind(a->rpath, "embeddings", &a->ep)))
            tool_fail(err_last());
        check_classes(mrec, rr);
        memcpy(S, emb_tensor(rr, "relevance", C, C, "the class relevance FedSM draws by"),
               (size_t)C * (size_t)C * sizeof *S);
        relevance_diag_row_mean(S, C);
    }
    float *feats = NULL;
    int32_t *labels = NULL;
    double t0 = tool_now();
    if (proto_features(&feats, &labels, m, s, mean, std, a->bn_train))
        tool_fail(err_last());
    double t1 = tool_now();
    int64_t N = (int64_t)C * a->per_class;
    float *out = xmalloc((size_t)N * (size_t)D * sizeof *out);
    int32_t *y = xmalloc((size_t)N * sizeof *y);
    a->mx.per_class = a->per_class;
    a->mx.seed = a->seed;
    a->mx.round = a->round;
    a->mx.client = a->client;
    if (mixup_generate(out, y, feats, labels, s->n, D, S, P, C, &a->mx, NULL, NULL))
        tool_fail(err_last());
    tool_log(1, "round %lld client %lld: %lld local features (%.2f s), %lld pseudo-features "
                "(%s%s, %.2f s)",
             (long long)a->round, (long long)a->client, (long long)s->n, t1 - t0, (long long)N,
             mixup_select_name(a->mx.select), a->mx.temp > 0 ? ", softmax temperature" : "",
             tool_now() - t1);
    record *r = rec_new("features");
    if (!r || rec_add(r, "features", DT_F32, 2, (int64_t[]){N, D}, out, REC_COPY) ||
        rec_add(r, "labels", DT_I32, 1, (int64_t[]){N}, y, REC_COPY) ||
        rec_set_int(r, "client", a->client) || rec_set_int(r, "num_samples", s->n) ||
        rec_set_str(r, "select", mixup_select_name(a->mx.select)) ||
        rec_set_float(r, "temp", a->mx.temp) ||
        rec_set_str(r, "bn", a->bn_train ? "train" : "eval"))
        tool_fail(err_last());
    free(out);
    free(y);
    free(feats);
    free(labels);
    free(S);
    rec_free(pr);
    rec_free(rr);
    shard_free(s);
    return r;
}

int main(int argc, char **argv)
{
    tool_init("featgen");
    fg_args a = {.method = -1, .per_class = 100, .round = -1, .client = INT64_MIN};
    gradmatch_opts_default(&a.gm);
    mixup_opts_default(&a.mx);
    ep_opts_default(&a.ep);
    tool_common co = {.usage = usage, .seed = 7};
    enum { O_PER = 0x100, O_ROUND, O_ITERS, O_LR, O_BETA, O_TAU, O_SELECT, O_TEMP, O_BN, O_CLIENT };
    static const struct option lo[] = {
        {"method", required_argument, 0, 'M'},     {"model", required_argument, 0, 'm'},
        {"gradients", required_argument, 0, 'g'},  {"features", required_argument, 0, 'f'},
        {"embeddings", required_argument, 0, 'e'}, {"shard", required_argument, 0, 'd'},
        {"prototypes", required_argument, 0, 'P'}, {"relevance", required_argument, 0, 'r'},
        {"per-class", required_argument, 0, O_PER}, {"round", required_argument, 0, O_ROUND},
        {"iters", required_argument, 0, O_ITERS},  {"lr", required_argument, 0, O_LR},
        {"beta", required_argument, 0, O_BETA},    {"tau", required_argument, 0, O_TAU},
        {"select", required_argument, 0, O_SELECT}, {"temp", required_argument, 0, O_TEMP},
        {"proto-bn", required_argument, 0, O_BN},  {"client", required_argument, 0, O_CLIENT},
        {0, 0, 0, 0}};
    int c;
    bool iters_set = false, beta_set = false, tau_set = false, sel_set = false, temp_set = false;
    while ((c = tool_getopt(argc, argv, "M:m:g:f:e:d:P:r:", lo, &co)) != -1) {
        switch (c) {
        case 'M': {
            int m = -1; /* a later --method is checked too, not hidden by an earlier one */
            for (int i = 0; i < 3; i++)
                if (!strcmp(optarg, method_names[i]))
                    m = i;
            if (m < 0)
                tool_usage_error("--method '%s': creff, clip2fl or fedsm", optarg);
            a.method = m;
            break;
        }
        case 'm': a.mpath = optarg; break;
        case 'g': a.gpath = optarg; break;
        case 'f': a.prev = optarg; break;
        case 'e': a.epath = optarg; break;
        case 'd': a.dpath = optarg; break;
        case 'P': a.ppath = optarg; break;
        case 'r': a.rpath = optarg; break;
        case O_PER: a.per_class = (int)tool_parse_int("--per-class", optarg, 1, 1000000); break;
        case O_ROUND: a.round = tool_parse_int("--round", optarg, 0, MODEL_ROUND_MAX); break;
        case O_ITERS: a.gm.iters = (int)tool_parse_int("--iters", optarg, 0, 10000000), iters_set = true; break;
        case O_LR: a.gm.lr = (float)tool_parse_double("--lr", optarg, 0, 1e6); break;
        case O_BETA: a.gm.beta = (float)tool_parse_double("--beta", optarg, 0, 1e6), beta_set = true; break;
        case O_TAU: a.gm.tau = (float)tool_parse_double("--tau", optarg, 1e-6, 1e6), tau_set = true; break;
        case O_SELECT:
            if ((c = mixup_select_parse(optarg)) < 0)
                tool_usage_error("--select '%s': prob, det or uniform", optarg);
            a.mx.select = c, sel_set = true;
            break;
        case O_TEMP: a.mx.temp = tool_parse_double("--temp", optarg, 0, 1e9), temp_set = true; break;
        case O_BN:
            if (strcmp(optarg, "eval") && strcmp(optarg, "train"))
                tool_usage_error("--proto-bn '%s': eval or train", optarg);
            a.bn_train = !strcmp(optarg, "train");
            break;
        case O_CLIENT: a.client = tool_parse_int("--client", optarg, -1, INT32_MAX); break;
        }
    }
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if ((int)a.method < 0)
        tool_usage_error("give --method creff, clip2fl or fedsm");
    if (!a.mpath || !co.out)
        tool_usage_error("need --model and -o");
    bool fedsm = a.method == M_FEDSM;
    if (fedsm && (a.gpath || a.prev || a.epath || iters_set || beta_set || tau_set))
        tool_usage_error("--gradients, --features, --embeddings, --iters, --beta and --tau are for creff/clip2fl");
    if (!fedsm && (a.dpath || a.ppath || a.rpath || sel_set || temp_set || a.bn_train || a.client != INT64_MIN))
        tool_usage_error("--shard, --prototypes, --relevance, --select, --temp, --proto-bn and --client are for fedsm");
    if (!fedsm && !a.gpath)
        tool_usage_error("%s needs --gradients (aggregate --gradients)", method_names[a.method]);
    if (a.method == M_CLIP2FL && !a.epath)
        tool_usage_error("clip2fl needs --embeddings (clip-embed's output: CLIP's class text embeddings)");
    if (a.method == M_CREFF && (a.epath || beta_set || tau_set))
        tool_usage_error("--embeddings, --beta and --tau are clip2fl's (creff has no text embeddings)");
    if (fedsm && (!a.dpath || !a.ppath))
        tool_usage_error("fedsm needs --shard and --prototypes");
    if (fedsm && !a.rpath && a.mx.select != MIXUP_UNIFORM)
        tool_usage_error("--select %s needs --relevance (an embeddings record)", mixup_select_name(a.mx.select));
    if (temp_set && a.mx.select != MIXUP_PROB)
        tool_usage_error("--temp goes with --select prob");
    if (ep_check_writer(co.out)) /* a bad -o fails now, not after the work */
        tool_fail(err_last());
    a.seed = co.seed;

    record *mrec = ep_read_one(a.mpath, "model", &a.ep);
    if (!mrec)
        tool_fail(err_last());
    model *m = model_from_record(mrec);
    if (!m)
        tool_fail(err_last());
    if (a.round < 0 && rec_opt_int(mrec, "round", &a.round) != 0)
        a.round = 0;
    record *out = fedsm ? run_fedsm(&a, mrec, m) : run_match(&a, mrec, m);

    const char **names = NULL;
    size_t nn = 0;
    if (mv_map_get(mrec->meta, "classes") && rec_get_strs(mrec, "classes", &names, &nn))
        tool_fail(err_last());
    inputs in;
    inputs_init(&in);
    const char *files[] = {a.mpath, a.gpath, a.prev, a.epath, a.dpath, a.ppath, a.rpath};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        if (files[i])
            inputs_add_file(&in, files[i]);
    inputs_add_option(&in, "method", method_names[a.method]);
    inputs_add_option_int(&in, "per_class", a.per_class);
    inputs_add_option_int(&in, "round", a.round);
    inputs_add_option_int(&in, "seed", (int64_t)a.seed);
    if (fedsm) {
        inputs_add_option(&in, "select", mixup_select_name(a.mx.select));
        inputs_add_option_float(&in, "temp", a.mx.temp);
        inputs_add_option_int(&in, "bn_train", a.bn_train);
        inputs_add_option_int(&in, "client", a.client);
    } else {
        inputs_add_option_int(&in, "iters", a.gm.iters);
        inputs_add_option_float(&in, "lr", a.gm.lr);
        inputs_add_option_float(&in, "beta", a.method == M_CLIP2FL ? a.gm.beta : 0);
        inputs_add_option_float(&in, "tau", a.gm.tau);
    }
    if (rec_set_int(out, "round", a.round) || rec_set_str(out, "method", method_names[a.method]) ||
        rec_set_int(out, "num_classes", m->cfg.num_classes) ||
        rec_set_int(out, "feat_dim", m->feat_dim) ||
        (names && rec_set_strs(out, "classes", names, nn)) ||
        rec_set_int(out, "seed", (int64_t)a.seed) ||
        rec_set_str(out, "producer", "featgen " FEDSM_VERSION) || inputs_set(&in, out))
        tool_fail(err_last());
    if (ep_write_one(co.out, out, &a.ep))
        tool_fail(err_last());
    free(names);
    rec_free(out);
    model_free(m);
    rec_free(mrec);
    return 0;
}
