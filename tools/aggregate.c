/* aggregate - the server step of a round: FedAvg over client `update` records (files,
 * stdin or a ZeroMQ endpoint), weighted by sample counts over every tensor, BatchNorm
 * running statistics included, summed in client-id order (docs/algorithms.md 1.7, DESIGN 6).
 * Also makes the initial global model (--init) and draws a round's clients (--select).
 * Not here: prototypes and per-class gradients (CReFF/CLIP2FL/FedSM stages). */
#include "endpoint.h"
#include "dataset.h"
#include "err.h"
#include "classgrad.h"
#include "fedavg.h"
#include "gradmatch.h"
#include "proto.h"
#include "inputs.h"
#include "model.h"
#include "select.h"
#include "tool.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn static void usage(void)
{
    printf(
        "usage: aggregate [options] -o MODEL UPDATE...      FedAvg of client updates\n"
        "       aggregate --init ARCH --classes C [--proj 512] --seed S -o MODEL\n"
        "       aggregate --select K --clients N --round R --seed S\n"
        "       aggregate --gradients -o GRADIENTS GRADIENTS...    CReFF/CLIP2FL: per-class mean\n"
        "       aggregate --prototypes -o PROTOTYPES PROTOTYPES... FedSM: global prototypes\n"
        "       aggregate --heads -m MODEL -o OUT HEADS...   FedSM: averaged retrained heads\n\n"
        "FedAvg: every tensor (BatchNorm running stats included) is averaged with weights\n"
        "n_k / sum n (n_k = the update's num_samples), summed in client-id order.\n"
        "UPDATE is a file, '-' (stdin) or a ZeroMQ endpoint ('@tcp://*:5555' binds).\n"
        "  -o, --out MODEL      the new global model (kind model)\n"
        "  -m, --model G        the global model the updates were trained from: updates must\n"
        "                       match its architecture and carry round = its round + 1\n"
        "      --round R        require every update to carry round R\n"
        "      --expect K       read K updates (ZeroMQ: K producers; files: checked count)\n"
        "      --timeout SEC    ZeroMQ receive timeout (default 600)\n"
        "      --max-msg BYTES  ZeroMQ maximum message size (default 64 GiB)\n"
        "init:\n"
        "      --init ARCH      resnet8 | cifar-resnet | resnet50\n"
        "      --classes C      number of classes\n"
        "      --partition P    take the classes (number and names) from a partition record\n"
        "      --names FILE     class names, one per line (default: 0..C-1)\n"
        "      --proj D         projection Linear to D dims before fc (CLIP2FL/FedSM: 512)\n"
        "      --depth D, --width W, --input-size S   architecture overrides\n"
        "select:\n"
        "      --select K       print K distinct client ids of N (seeded by seed and round)\n"
        "      --clients N      number of clients\n"
        "methods (docs/algorithms.md 3 step 5, 5.4 steps 2 and 5):\n"
        "      --gradients      average `gradients` records class by class: the uniform mean\n"
        "                       over the clients that hold the class (not weighted by counts)\n"
        "      --prototypes     P_c = sum_k n_kc mu_kc/|mu_kc| / sum_k n_kc over `prototypes`\n"
        "                       records (not re-normalised)\n"
        "      --heads          average the classifiers (fc) of retrained client `update`s\n"
        "                       weighted by num_samples / their sum; the body is -m MODEL's,\n"
        "                       and every head's body must equal it\n"
        "common: -s/--seed S (default 7; --init and --select only), --threads N, -q, -v,\n"
        "        -h/--help, -V/--version\n"
        "examples:\n"
        "  aggregate --init resnet8 --classes 10 --seed 7 -o round-000/model.mpk.zst\n"
        "  aggregate -m round-000/model.mpk.zst -o round-001/model.mpk.zst round-001/update-*.mpk.zst\n"
        "  aggregate --expect 8 -o model.mpk.zst @tcp://*:5555\n"
        "exit: 0 ok, 1 runtime, 2 usage, 3 bad input (a NaN weight, an empty input, ...),\n"
        "      4 I/O or network\n");
    exit(0);
}

static int cmp_client(const void *a, const void *b)
{
    int64_t x = 0, y = 0;
    rec_opt_int(*(record *const *)a, "client", &x);
    rec_opt_int(*(record *const *)b, "client", &y);
    return (x > y) - (x < y);
}

static char **read_names(const char *path, int n)
{
    char **names = calloc((size_t)n, sizeof *names);
    if (!names)
        tool_die(ERR_INTERNAL, "out of memory for %d class names", n);
    if (path) { /* one checked reader of names files (dataset.h): UTF-8, no gaps, no repeats */
        char **got;
        int ng;
        if (ds_read_names(path, &got, &ng))
            tool_fail(err_last());
        if (ng != n)
            tool_die(ERR_FORMAT, "%s holds %d class names, the model has %d classes", path, ng, n);
        free(names);
        return got;
    }
    for (int i = 0; i < n; i++) {
        char line[32];
        snprintf(line, sizeof line, "%d", i);
        if (!(names[i] = strdup(line)))
            tool_die(ERR_INTERNAL, "out of memory for class names");
    }
    return names;
}

static const char *const arch_keys[] = {"arch", "depth", "width", "num_classes", "proj_dim"};

/* The update must describe the same architecture as ref (meta keys present in both). */
static void check_arch(const record *u, const record *ref)
{
    for (size_t i = 0; i < sizeof arch_keys / sizeof *arch_keys; i++) {
        const mval *a = mv_map_get(u->meta, arch_keys[i]), *b = mv_map_get(ref->meta, arch_keys[i]);
        if (!a || !b)
            continue;
        bool same = a->type == b->type &&
                    ((a->type == MV_STR && strcmp(a->u.str.s, b->u.str.s) == 0) ||
                     (a->type == MV_INT && a->u.i == b->u.i));
        if (!same) {
            int64_t c = -1;
            rec_opt_int(u, "client", &c);
            tool_die(ERR_FORMAT,
                     "update of client %lld is another architecture (stream %s, record %ld, "
                     "field meta.%s differs from %s)",
                     (long long)c, u->src, u->index, arch_keys[i], ref->src);
        }
    }
}

/* Every mode's options, filled by main's one option loop. */
typedef struct {
    const char *out, *gpath, *init_arch, *names_path, *ppath;
    int64_t round_req, expect, classes, proj, depth, width, insize, select_k, nclients;
    uint64_t seed;
    ep_opts ep;
    const char **inputs; /* n_in endpoints: --in and the operands */
    int n_in;
} agg_args;

/* --select K: K distinct client ids of N, seeded by (seed, "select", round): the first K of
 * the round's seeded order (select.h, which fl-server shares), in increasing order. */
static int run_select(const agg_args *a)
{
    if (a->nclients < 0 || a->round_req < 0)
        tool_usage_error("--select needs --clients N and --round R");
    if (a->select_k > a->nclients)
        tool_usage_error("--select %lld is more than --clients %lld", (long long)a->select_k,
                         (long long)a->nclients);
    int64_t *order = malloc((size_t)a->nclients * sizeof *order);
    int64_t *ids = malloc((size_t)a->select_k * sizeof *ids);
    if (!order || !ids)
        tool_die(ERR_INTERNAL, "out of memory for %lld client ids", (long long)a->nclients);
    fl_select_order(order, a->nclients, a->seed, a->round_req);
    int64_t k = fl_select_present(ids, a->select_k, order, a->nclients, NULL);
    for (int64_t i = 0; i < k; i++)
        printf("%lld\n", (long long)ids[i]);
    free(order);
    free(ids);
    return 0;
}

/* --init ARCH: the round-0 global model. */
static int run_init(const agg_args *a)
{
    int64_t classes = a->classes;
    const char **pnames = NULL;
    record *prec = NULL;
    if (a->ppath) {
        size_t pn;
        if (!(prec = ep_read_one(a->ppath, "partition", &a->ep)) ||
            rec_get_strs(prec, "classes", &pnames, &pn))
            tool_fail(err_last());
        if (classes >= 0 && classes != (int64_t)pn)
            tool_usage_error("--classes %lld but %s names %zu classes", (long long)classes,
                             a->ppath, pn);
        classes = (int64_t)pn;
    }
    if (classes < 0)
        tool_usage_error("--init needs --classes C or --partition P");
    model_config cfg;
    if (model_config_default(&cfg, a->init_arch))
        tool_usage_error("--init: %s", err_msg());
    cfg.num_classes = (int)classes;
    cfg.proj_dim = (int)a->proj;
    if (a->depth > 0)
        cfg.depth = (int)a->depth;
    if (a->width > 0)
        cfg.width = (int)a->width;
    if (a->insize > 0)
        cfg.input_size = (int)a->insize;
    model *m = model_new(&cfg);
    if (!m)
        tool_usage_error("%s", err_msg());
    model_init(m, a->seed);
    record *r = rec_new("model");
    char **names = read_names(a->names_path, (int)classes);
    for (int64_t i = 0; pnames && !a->names_path && i < classes; i++) {
        free(names[i]);
        names[i] = strdup(pnames[i]);
    }
    free(pnames);
    if (!r || model_to_record(m, r, REC_BORROW) ||
        rec_set_strs(r, "classes", (const char *const *)names, (size_t)classes) ||
        rec_set_int(r, "round", 0) || rec_set_int(r, "seed", (int64_t)a->seed) ||
        rec_set_str(r, "producer", "aggregate " FEDSM_VERSION))
        tool_fail(err_last());
    /* the data decides the normalisation (norm.h): the partition's mean/std replace the
     * architecture's default, so its shards and this model agree */
    for (const char *const *k = (const char *const[]){"mean", "std", NULL}; prec && *k; k++) {
        const mval *v = mv_map_get(prec->meta, *k);
        mval cp;
        if (v && (mv_copy(&cp, v) || mv_map_put(r->meta, *k, &cp)))
            tool_fail(ERR_INTERNAL);
    }
    rec_free(prec);
    inputs in;
    inputs_init(&in);
    if (a->ppath)
        inputs_add_file(&in, a->ppath);
    if (a->names_path)
        inputs_add_file(&in, a->names_path);
    inputs_add_option(&in, "mode", "init");
    inputs_add_option(&in, "arch", cfg.arch);
    inputs_add_option_int(&in, "classes", classes);
    inputs_add_option_int(&in, "proj", cfg.proj_dim);
    inputs_add_option_int(&in, "depth", cfg.depth);
    inputs_add_option_int(&in, "width", cfg.width);
    inputs_add_option_int(&in, "input_size", cfg.input_size);
    inputs_add_option_int(&in, "seed", (int64_t)a->seed);
    if (inputs_set(&in, r))
        tool_fail(err_last());
    if (model_check_record(r)) /* the partition's mean/std, say, are checked like any model's */
        tool_fail(err_wrap(ERR_FORMAT, "%s", a->ppath ? a->ppath : "--init"));
    if (ep_write_one(a->out, r, &a->ep))
        tool_fail(err_last());
    tool_log(1, "initial %s model (%zu parameters, %lld classes) -> %s", cfg.arch, m->n_params,
             (long long)classes, a->out);
    for (int64_t i = 0; i < classes; i++)
        free(names[i]);
    free(names);
    rec_free(r);
    model_free(m);
    return 0;
}

/* Reads every record of the inputs, each of kind `kind`, sorted by client id; *n gets the
 * count. */
static record **read_kind(const agg_args *a, const char *kind, int *n_out)
{
    int cap = 64, n = 0;
    record **ups = malloc((size_t)cap * sizeof *ups);
    if (!ups)
        tool_die(ERR_INTERNAL, "out of memory for the update list");
    for (int i = 0; i < a->n_in; i++) {
        ep_opts oi = a->ep;
        if (ep_is_zmq(a->inputs[i]) && a->expect > 0)
            oi.producers = (int)a->expect;
        rec_reader *rd = ep_open_reader(a->inputs[i], &oi);
        if (!rd)
            tool_fail(err_last());
        record *r;
        int rc, n0 = n;
        while ((rc = rec_read(rd, &r)) == 1) {
            if (strcmp(r->kind, kind) != 0)
                tool_die(ERR_FORMAT, "wrong record kind (stream %s, record %ld, field kind): "
                         "expected %s, got %s", r->src, r->index, kind, r->kind);
            if (n == cap) {
                record **bigger = realloc(ups, (size_t)(cap *= 2) * sizeof *ups);
                if (!bigger)
                    tool_die(ERR_INTERNAL, "out of memory for %d updates", cap);
                ups = bigger;
            }
            ups[n++] = r;
            tool_log(2, "update %d from %s", n, r->src);
        }
        if (rc < 0)
            tool_fail(rc);
        if (n == n0) /* an empty or end-only stream would drop its client from the average */
            tool_die(ERR_FORMAT, "%s holds no %s record: every input named must contribute its "
                     "records", rec_reader_name(rd), kind);
        rec_reader_close(rd);
    }
    if (n == 0)
        tool_die(ERR_FORMAT, "no %s records in the input", kind);
    if (a->expect > 0 && n != a->expect)
        tool_die(ERR_FORMAT, "expected %lld %s records, got %d", (long long)a->expect, kind, n);
    qsort(ups, (size_t)n, sizeof *ups, cmp_client);
    *n_out = n;
    return ups;
}

/* The default mode: FedAvg of the updates into the next global model. */
static int run_fedavg(const agg_args *a)
{
    if (a->n_in == 0)
        tool_usage_error("no updates given");
    record *g = NULL;
    if (a->gpath && !(g = ep_read_one(a->gpath, "model", &a->ep)))
        tool_fail(err_last());
    int n;
    record **ups = read_kind(a, "update", &n);
    /* the reference (the global model, else the first update) is checked whole, meta and
     * layout, by building it; every update is checked against it (check_arch, the layout in
     * fedavg_records) and by value (model_check_record) below */
    model *ref = model_from_record(g ? g : ups[0]);
    if (!ref)
        tool_fail(err_last());
    model_free(ref);

    int64_t round = -1, total_n = 0;
    double *w = malloc((size_t)n * sizeof *w);
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    if (!w || !ids)
        tool_die(ERR_INTERNAL, "out of memory for %d update weights", n);
    for (int k = 0; k < n; k++) {
        int64_t client, ur, ns;
        if (rec_get_int(ups[k], "client", &client) || rec_get_int(ups[k], "round", &ur) ||
            rec_get_int(ups[k], "num_samples", &ns))
            tool_fail(err_last());
        ids[k] = client;
        if (client < 0)
            tool_die(ERR_FORMAT, "update of client %lld (stream %s, field meta.client): a client "
                     "id is 0 or more", (long long)client, ups[k]->src);
        if (k && ids[k] == ids[k - 1])
            tool_die(ERR_FORMAT, "two updates from client %lld (%s and %s)", (long long)client,
                     ups[k - 1]->src, ups[k]->src);
        if (model_check_record(ups[k])) /* finite weights, round >= 0, num_samples >= 0, ... */
            tool_fail(err_wrap(ERR_FORMAT, "update of client %lld", (long long)client));
        if (__builtin_add_overflow(total_n, ns, &total_n))
            tool_die(ERR_FORMAT, "update of client %lld (stream %s, field meta.num_samples): %lld "
                     "samples make the sum overflow a 64-bit count", (long long)client,
                     ups[k]->src, (long long)ns);
        if (round < 0)
            round = ur;
        int64_t want = a->round_req >= 0 ? a->round_req : round;
        if (g && a->round_req < 0) {
            int64_t gr = 0;
            rec_opt_int(g, "round", &gr);
            want = gr + 1;
        }
        if (ur != want)
            tool_die(ERR_FORMAT,
                     "update of client %lld is for round %lld, not %lld (stream %s, field "
                     "meta.round)",
                     (long long)client, (long long)ur, (long long)want, ups[k]->src);
        round = want;
        check_arch(ups[k], g ? g : ups[0]);
        w[k] = (double)ns;
    }
    record *m = rec_new("model");
    if (!m)
        tool_fail(ERR_INTERNAL);
    if (fedavg_records(m, ups, w, n))
        tool_fail(err_last());
    if (g) { /* the model must keep the global model's tensor set */
        record *pair[2] = {g, m};
        if (fedavg_check_layout(pair, 2))
            tool_fail(err_last());
    }
    /* meta: the architecture and classes of the inputs, plus what this round was */
    const mval *src_meta = (g ? g : ups[0])->meta;
    for (size_t i = 0; i < src_meta->u.map.n; i++) {
        const char *k = src_meta->u.map.keys[i];
        if (!strcmp(k, "client") || !strcmp(k, "num_samples") || !strcmp(k, "loss") ||
            !strcmp(k, "inputs") || !strcmp(k, "producer") || !strcmp(k, "round") ||
            !strcmp(k, "clients") || !strcmp(k, "epochs") || !strcmp(k, "lr"))
            continue;
        mval cp;
        if (mv_copy(&cp, &src_meta->u.map.vals[i]) || mv_map_put(m->meta, k, &cp))
            tool_fail(ERR_INTERNAL);
    }
    inputs in; /* the global model, then each input stream as named */
    inputs_init(&in);
    if (a->gpath)
        inputs_add_file(&in, a->gpath);
    for (int i = 0; i < a->n_in; i++)
        inputs_add_file(&in, a->inputs[i]);
    inputs_add_option(&in, "mode", "fedavg");
    inputs_add_option_int(&in, "round", a->round_req);
    if (rec_set_int(m, "round", round) || rec_set_ints(m, "clients", ids, (size_t)n) ||
        rec_set_int(m, "num_samples", total_n) ||
        rec_set_str(m, "producer", "aggregate " FEDSM_VERSION) || inputs_set(&in, m))
        tool_fail(err_last());
    if (ep_write_one(a->out, m, &a->ep))
        tool_fail(err_last());
    tool_log(1, "round %lld: averaged %d updates (%lld samples) -> %s", (long long)round, n,
             (long long)total_n, a->out);
    for (int k = 0; k < n; k++)
        rec_free(ups[k]);
    free(ups);
    free(w);
    free(ids);
    rec_free(m);
    rec_free(g);
    return 0;
}

/* Common tail of the method modes: meta (round, producer, inputs), write, free. */
static void write_method_output(const agg_args *a, record *out, record **in, int n,
                                const char *mode, int64_t round)
{
    inputs inp;
    inputs_init(&inp);
    if (a->gpath)
        inputs_add_file(&inp, a->gpath);
    for (int i = 0; i < a->n_in; i++)
        inputs_add_file(&inp, a->inputs[i]);
    inputs_add_option(&inp, "mode", mode);
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids)
        tool_die(ERR_INTERNAL, "out of memory");
    for (int k = 0; k < n; k++) {
        ids[k] = -1;
        rec_opt_int(in[k], "client", &ids[k]);
    }
    if (rec_set_int(out, "round", round) || rec_set_int(out, "client", -1) ||
        rec_set_ints(out, "clients", ids, (size_t)n) ||
        rec_set_str(out, "producer", "aggregate " FEDSM_VERSION) || inputs_set(&inp, out))
        tool_fail(err_last());
    if (ep_write_one(a->out, out, &a->ep))
        tool_fail(err_last());
    free(ids);
    for (int k = 0; k < n; k++)
        rec_free(in[k]);
    free(in);
    rec_free(out);
}

/* Every input's meta.round (0 or more), which must agree (-1 when none has one); meta.client
 * -1 (the server) or more, no client twice. */
static int64_t common_round(record **in, int n)
{
    for (int k = 1; k < n; k++) { /* sorted by client id */
        int64_t x = -1, y = -1;
        rec_opt_int(in[k - 1], "client", &x);
        rec_opt_int(in[k], "client", &y);
        if (x >= 0 && x == y)
            tool_die(ERR_FORMAT, "two %s records from client %lld (%s and %s)", in[k]->kind,
                     (long long)x, in[k - 1]->src, in[k]->src);
    }
    for (int k = 0; k < n; k++) {
        int64_t r = -1, c = -1;
        if (rec_opt_int(in[k], "round", &r) || rec_opt_int(in[k], "client", &c))
            tool_fail(err_last());
        if (mv_map_get(in[k]->meta, "round") && (r < 0 || r > MODEL_ROUND_MAX))
            tool_die(ERR_FORMAT, "%s (record %ld, field meta.round): %lld is not a round (0 to %d)",
                     in[k]->src, in[k]->index, (long long)r, MODEL_ROUND_MAX);
        if (c < -1)
            tool_die(ERR_FORMAT, "%s (record %ld, field meta.client): %lld is not a client id (0 or "
                     "more; -1: the server)", in[k]->src, in[k]->index, (long long)c);
    }
    int64_t round = -1;
    for (int k = 0; k < n; k++) {
        int64_t r = -1;
        rec_opt_int(in[k], "round", &r);
        if (k && r != round)
            tool_die(ERR_FORMAT, "%s is for round %lld, %s for round %lld (field meta.round)",
                     in[0]->src, (long long)round, in[k]->src, (long long)r);
        round = r;
    }
    return round;
}

/* --gradients: the per-class uniform mean over the clients holding the class (CReFF). */
static int run_gradients(const agg_args *a)
{
    if (a->n_in == 0)
        tool_usage_error("no gradients records given");
    int n;
    record **in = read_kind(a, "gradients", &n);
    int64_t round = common_round(in, n);
    classgrad **g = malloc((size_t)n * sizeof *g);
    if (!g)
        tool_die(ERR_INTERNAL, "out of memory");
    for (int k = 0; k < n; k++)
        if (!(g[k] = classgrad_from_record(in[k], k ? g[0]->num_classes : -1, k ? g[0]->feat_dim : -1)))
            tool_fail(err_last());
    classgrad *avg = gradmatch_average((const classgrad *const *)g, n);
    if (!avg)
        tool_fail(err_last());
    int64_t repeats = 0, batch = 0;
    rec_opt_int(in[0], "repeats", &repeats);
    rec_opt_int(in[0], "batch", &batch);
    const char **names = NULL;
    size_t nn = 0;
    if (mv_map_get(in[0]->meta, "classes") && rec_get_strs(in[0], "classes", &names, &nn))
        tool_fail(err_last());
    record *out = rec_new("gradients");
    if (!out || classgrad_to_record(avg, out, round, -1, (int)repeats, (int)batch,
                                    names && (int)nn == avg->num_classes ? names : NULL))
        tool_fail(err_last());
    tool_log(1, "round %lld: gradients of %d classes averaged over %d clients -> %s",
             (long long)round, avg->k, n, a->out);
    free(names);
    for (int k = 0; k < n; k++)
        classgrad_free(g[k]);
    free(g);
    classgrad_free(avg);
    write_method_output(a, out, in, n, "gradients", round);
    return 0;
}

/* --prototypes: FedSM's global prototypes from the clients' (proto.h). */
static int run_prototypes(const agg_args *a)
{
    if (a->n_in == 0)
        tool_usage_error("no prototypes records given");
    int n;
    record **in = read_kind(a, "prototypes", &n);
    int64_t round = common_round(in, n);
    record *out = rec_new("prototypes");
    if (!out || proto_aggregate_records(out, in, n))
        tool_fail(err_last());
    tool_log(1, "round %lld: prototypes of %d clients -> %s", (long long)round, n, a->out);
    write_method_output(a, out, in, n, "prototypes", round);
    return 0;
}

/* --heads: the body of -m MODEL with the clients' retrained heads averaged, weights
 * num_samples / sum (FedSM, docs/algorithms.md 5.4 step 5: normalised, the intent of the
 * reference code).  Every head's other tensors must equal MODEL's (same body). */
static int run_heads(const agg_args *a)
{
    if (a->n_in == 0)
        tool_usage_error("no retrained heads given");
    if (!a->gpath)
        tool_usage_error("--heads needs -m MODEL (the body the heads were trained on)");
    record *g = ep_read_one(a->gpath, "model", &a->ep);
    if (!g)
        tool_fail(err_last());
    model *m = model_from_record(g);
    if (!m)
        tool_fail(err_last());
    int C = m->cfg.num_classes, D = m->feat_dim;
    int n;
    record **in = read_kind(a, "update", &n);
    int64_t round = common_round(in, n), total_n = 0;
    double total = 0, *w = malloc((size_t)n * sizeof *w);
    double *acc = calloc((size_t)C * (size_t)D + (size_t)C, sizeof *acc);
    if (!w || !acc)
        tool_die(ERR_INTERNAL, "out of memory");
    for (int k = 0; k < n; k++) {
        int64_t ns;
        if (rec_get_int(in[k], "num_samples", &ns))
            tool_fail(err_last());
        if (ns <= 0)
            tool_die(ERR_FORMAT, "head %s has num_samples %lld (field meta.num_samples)",
                     in[k]->src, (long long)ns);
        if (__builtin_add_overflow(total_n, ns, &total_n))
            tool_die(ERR_FORMAT, "head %s (field meta.num_samples): %lld samples make the sum "
                     "overflow a 64-bit count", in[k]->src, (long long)ns);
        w[k] = (double)ns;
        total += w[k];
        if (model_check_record(in[k]) || model_check_meta(m, in[k])) /* finite, of MODEL */
            tool_fail(err_wrap(ERR_FORMAT, "head %s", in[k]->src));
        for (int t = 0; t < m->n_tensors; t++) { /* the same body as MODEL */
            const model_tensor *mt = &m->tensors[t];
            if (!strcmp(mt->name, "fc.weight") || !strcmp(mt->name, "fc.bias"))
                continue;
            const tensor *x = rec_get(in[k], mt->name, DT_F32, mt->ndim, mt->shape);
            if (!x)
                tool_fail(err_last());
            if (memcmp(x->data, m->params + mt->offset, mt->numel * sizeof(float)))
                tool_die(ERR_FORMAT, "head %s was not trained on the body of %s (tensor %s differs)",
                         in[k]->src, a->gpath, mt->name);
        }
    }
    for (int k = 0; k < n; k++) {
        const tensor *hw = rec_get(in[k], "fc.weight", DT_F32, 2, (int64_t[]){C, D});
        const tensor *hb = hw ? rec_get(in[k], "fc.bias", DT_F32, 1, (int64_t[]){C}) : NULL;
        if (!hb)
            tool_fail(err_last());
        double wk = w[k] / total;
        for (size_t i = 0; i < (size_t)C * D; i++)
            acc[i] += wk * ((const float *)hw->data)[i];
        for (int i = 0; i < C; i++)
            acc[(size_t)C * D + i] += wk * ((const float *)hb->data)[i];
    }
    /* the output is MODEL's record with fc replaced: every meta key (classes, normalisation) kept */
    const tensor *ow = rec_get(g, "fc.weight", DT_F32, 2, (int64_t[]){C, D});
    const tensor *ob = ow ? rec_get(g, "fc.bias", DT_F32, 1, (int64_t[]){C}) : NULL;
    if (!ob)
        tool_fail(err_last());
    for (size_t i = 0; i < (size_t)C * D; i++)
        ((float *)ow->data)[i] = (float)acc[i];
    for (int i = 0; i < C; i++)
        ((float *)ob->data)[i] = (float)acc[(size_t)C * D + i];
    record *out = g;
    if (rec_set_int(out, "heads_averaged", n) || rec_set_int(out, "num_samples", total_n))
        tool_fail(err_last());
    tool_log(1, "round %lld: %d retrained heads averaged (%lld samples) -> %s", (long long)round,
             n, (long long)total_n, a->out);
    free(w);
    free(acc);
    model_free(m);
    write_method_output(a, out, in, n, "heads", round);
    return 0;
}

/* The modes, zstdcli-style: options set `mode`, main dispatches once.  Adding a mode is one
 * enum value, one row here (the option that selects it, the kind -o names if it writes one) and its
 * run_ function; a second mode option on one command line is a usage error. */
typedef enum { MODE_FEDAVG, MODE_INIT, MODE_SELECT, MODE_GRADIENTS, MODE_PROTOTYPES, MODE_HEADS, MODE_COUNT } agg_mode;
static const struct {
    const char *opt;    /* the option that selects the mode ("" for the default) */
    const char *out;    /* what -o names, said when it is missing (NULL: no -o) */
    int (*run)(const agg_args *);
} modes[MODE_COUNT] = {
    [MODE_FEDAVG] = {"", "MODEL", run_fedavg},
    [MODE_INIT] = {"--init", "MODEL", run_init},
    [MODE_SELECT] = {"--select", NULL, run_select},
    [MODE_GRADIENTS] = {"--gradients", "GRADIENTS", run_gradients},
    [MODE_PROTOTYPES] = {"--prototypes", "PROTOTYPES", run_prototypes},
    [MODE_HEADS] = {"--heads", "MODEL (the model with the averaged head)", run_heads},
};

static void set_mode(agg_mode *mode, agg_mode m)
{
    if (*mode != MODE_FEDAVG && *mode != m)
        tool_usage_error("%s and %s are two modes: give one", modes[*mode].opt, modes[m].opt);
    *mode = m;
}

int main(int argc, char **argv)
{
    tool_init("aggregate");
    agg_args a = {.round_req = -1, .expect = -1, .classes = -1, .proj = 0, .depth = -1,
                  .width = -1, .insize = -1, .select_k = -1, .nclients = -1};
    tool_common co = {.usage = usage, .seed = 7};
    agg_mode mode = MODE_FEDAVG;
    ep_opts_default(&a.ep);
    a.ep.timeout_ms = 600000;
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},
        {"round", required_argument, 0, 'R'},    {"expect", required_argument, 0, 'E'},
        {"timeout", required_argument, 0, 'T'},  {"max-msg", required_argument, 0, 'M'},
        {"init", required_argument, 0, 'I'},     {"classes", required_argument, 0, 'C'},
        {"names", required_argument, 0, 'N'},    {"partition", required_argument, 0, 'p'},
        {"proj", required_argument, 0, 'P'},
        {"depth", required_argument, 0, 'D'},    {"width", required_argument, 0, 'W'},
        {"input-size", required_argument, 0, 'Z'}, {"select", required_argument, 0, 'S'},
        {"clients", required_argument, 0, 'K'},  {"in", required_argument, 0, 'i'},
        {"gradients", no_argument, 0, 0x100},    {"prototypes", no_argument, 0, 0x101},
        {"heads", no_argument, 0, 0x102},
        {0, 0, 0, 0}};
    a.inputs = calloc((size_t)argc + 1, sizeof *a.inputs);
    if (!a.inputs)
        tool_die(ERR_INTERNAL, "out of memory for %d arguments", argc);
    int c;
    while ((c = tool_getopt(argc, argv, "m:i:", lo, &co)) != -1) {
        switch (c) {
        case 'm': a.gpath = optarg; break;
        case 'R': a.round_req = tool_parse_int("--round", optarg, 0, INT32_MAX); break;
        case 'E': a.expect = tool_parse_int("--expect", optarg, 1, 1 << 20); break;
        case 'T': a.ep.timeout_ms = (int)(1000 * tool_parse_double("--timeout", optarg, 0, 1e6)); break;
        case 'M': a.ep.max_msg_bytes = tool_parse_int("--max-msg", optarg, -1, INT64_MAX); break;
        case 'I': a.init_arch = optarg; set_mode(&mode, MODE_INIT); break;
        case 'C': a.classes = tool_parse_int("--classes", optarg, 1, 1000000); break;
        case 'N': a.names_path = optarg; break;
        case 'p': a.ppath = optarg; break;
        case 'P': a.proj = tool_parse_int("--proj", optarg, 0, 1 << 16); break;
        case 'D': a.depth = tool_parse_int("--depth", optarg, 1, 1000); break;
        case 'W': a.width = tool_parse_int("--width", optarg, 1, 4096); break;
        case 'Z': a.insize = tool_parse_int("--input-size", optarg, 1, 4096); break;
        case 'S':
            a.select_k = tool_parse_int("--select", optarg, 1, 1 << 20);
            set_mode(&mode, MODE_SELECT);
            break;
        case 'K': a.nclients = tool_parse_int("--clients", optarg, 1, 1 << 20); break;
        case 'i': a.inputs[a.n_in++] = optarg; break;
        case 0x100: set_mode(&mode, MODE_GRADIENTS); break;
        case 0x101: set_mode(&mode, MODE_PROTOTYPES); break;
        case 0x102: set_mode(&mode, MODE_HEADS); break;
        }
    }
    a.out = co.out;
    a.seed = co.seed;
    for (int i = optind; i < argc; i++)
        a.inputs[a.n_in++] = argv[i];
    if (modes[mode].out && !a.out)
        tool_usage_error("no output: give -o %s", modes[mode].out);
    int n_stdin = (a.gpath && !strcmp(a.gpath, "-")) + (a.ppath && !strcmp(a.ppath, "-"));
    for (int i = 0; i < a.n_in; i++)
        n_stdin += !strcmp(a.inputs[i], "-");
    if (n_stdin > 1) /* the second reading of stdin would find it empty */
        tool_usage_error("'-' (stdin) is named %d times: it can be read once", n_stdin);
    if (a.out && ep_check_writer(a.out)) /* a bad -o fails now, not after reading the inputs */
        tool_fail(err_last());
    int rc = modes[mode].run(&a);
    free(a.inputs);
    return rc;
}
