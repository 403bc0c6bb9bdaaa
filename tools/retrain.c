/* retrain - a fresh linear classifier trained on labelled features, written into a model:
 * CReFF/CLIP2FL's server-side re-training on the federated features (docs/algorithms.md
 * section 3 step 7, 4.4) and FedSM's client head on its pseudo-features (section 5.4 step 4).
 * Reads a `features` record (features <f4 [N,D], labels <i4 [N]) and a `model`; writes the
 * model with fc replaced by the new head (kind `model`, or `update` with --num-samples, for
 * aggregate's sample-weighted average of the clients' heads).  Not a feature generator
 * (featgen) nor a body trainer (local-train).  The head: lib/fl/head.h. */
#include "endpoint.h"
#include "err.h"
#include "head.h"
#include "inputs.h"
#include "model.h"
#include "tool.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn static void usage(void)
{
    printf("usage: retrain --features F -m MODEL -o OUT [options]\n"
           "Train a fresh linear head (PyTorch nn.Linear init, SGD, cross-entropy) on labelled\n"
           "features and write MODEL with its classifier (fc) replaced by it.\n\n"
           "  -f, --features F     labelled features (kind features: features [N,D], labels [N]);\n"
           "                       D must be the model's feat_dim, labels in [0, num_classes)\n"
           "  -m, --model MODEL    the model whose body the head goes with (kind model)\n"
           "  -o, --out OUT        the retrained model (kind model, or update with --num-samples)\n"
           "  -e, --epochs E       epochs (default 300: CReFF/CLIP2FL; FedSM uses 60)\n"
           "  -b, --batch B        batch size (default 32; FedSM uses 256)\n"
           "      --lr LR          SGD learning rate (default 0.01)\n"
           "      --momentum M     SGD momentum (default 0)\n"
           "      --wd WD          weight decay (default 0)\n"
           "      --round R        round (default: the features' meta.round, else the model's)\n"
           "      --client K       client id for the random streams and meta (default: the\n"
           "                       features' meta.client, else -1 = server)\n"
           "      --num-samples N  write kind update with meta num_samples N and client (FedSM:\n"
           "                       the server averages the clients' heads weighted by N)\n"
           "      --as-update      the same with N = the features' meta.num_samples (featgen\n"
           "                       --method fedsm writes the client's sample count there)\n"
           "  -s, --seed S         seed (default 7); init and shuffles from streams keyed by\n"
           "                       (seed, round, client)\n"
           "      --threads N      compute threads (the head trains on one)\n"
           "  -q, --quiet / -v, --verbose\n"
           "  -h, --help / -V, --version\n\n"
           "example: retrain --features round-120/features.mpk.zst -m round-120/model.mpk.zst \\\n"
           "           -o round-120/retrained.mpk.zst\n"
           "exit: 0 ok, 1 training diverged, 2 usage, 3 bad input, 4 I/O\n");
    exit(0);
}

int main(int argc, char **argv)
{
    tool_init("retrain");
    const char *fpath = NULL, *mpath = NULL;
    int64_t round = -1, client = INT64_MIN, num_samples = -1;
    bool as_update = false;
    head_opts ho;
    head_opts_default(&ho);
    ep_opts o;
    ep_opts_default(&o);
    tool_common co = {.usage = usage, .seed = 7};
    enum { O_LR = 0x100, O_MOM, O_WD, O_ROUND, O_CLIENT, O_NUM, O_ASUPD };
    static const struct option lo[] = {
        {"features", required_argument, 0, 'f'}, {"in", required_argument, 0, 'f'},
        {"model", required_argument, 0, 'm'},    {"epochs", required_argument, 0, 'e'},
        {"batch", required_argument, 0, 'b'},    {"lr", required_argument, 0, O_LR},
        {"momentum", required_argument, 0, O_MOM}, {"wd", required_argument, 0, O_WD},
        {"round", required_argument, 0, O_ROUND}, {"client", required_argument, 0, O_CLIENT},
        {"num-samples", required_argument, 0, O_NUM}, {"as-update", no_argument, 0, O_ASUPD},
        {0, 0, 0, 0}};
    int c;
    while ((c = tool_getopt(argc, argv, "f:m:e:b:", lo, &co)) != -1) {
        switch (c) {
        case 'f': fpath = optarg; break;
        case 'm': mpath = optarg; break;
        case 'e': ho.epochs = (int)tool_parse_int("--epochs", optarg, 0, 1000000); break;
        case 'b': ho.batch = (int)tool_parse_int("--batch", optarg, 1, 1 << 24); break;
        case O_LR: ho.lr = (float)tool_parse_double("--lr", optarg, 0, 1e6); break;
        case O_MOM: ho.momentum = (float)tool_parse_double("--momentum", optarg, 0, 1); break;
        case O_WD: ho.wd = (float)tool_parse_double("--wd", optarg, 0, 1e6); break;
        case O_ROUND: round = tool_parse_int("--round", optarg, 0, MODEL_ROUND_MAX); break;
        case O_CLIENT: client = tool_parse_int("--client", optarg, -1, INT32_MAX); break;
        case O_NUM:
            num_samples = tool_parse_int("--num-samples", optarg, INT64_MIN, INT64_MAX);
            if (num_samples < 1) /* aggregate --heads refuses a head of no samples */
                tool_usage_error("--num-samples must be >= 1 (got %s)", optarg);
            break;
        case O_ASUPD: as_update = true; break;
        }
    }
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (!fpath || !mpath || !co.out)
        tool_usage_error("need --features, --model and -o");
    if (ep_check_writer(co.out)) /* a bad -o fails now, not after the training */
        tool_fail(err_last());

    record *fr = ep_read_one(fpath, "features", &o);
    if (!fr)
        tool_fail(err_last());
    record *mrec = ep_read_one(mpath, "model", &o);
    if (!mrec)
        tool_fail(err_last());
    model *m = model_from_record(mrec);
    if (!m)
        tool_fail(err_last());
    int C = m->cfg.num_classes, D = m->feat_dim;
    model_free(m);

    /* the features must fit the model: dims, classes, labels, finite values */
    const float *x;
    const int32_t *y;
    int64_t N;
    if (head_features_from_record(fr, C, D, &x, &y, &N))
        tool_fail(err_last());

    if (as_update && num_samples < 0) {
        if (rec_get_int(fr, "num_samples", &num_samples))
            tool_fail(err_last());
        if (num_samples < 1) /* aggregate --heads refuses a head of no samples */
            tool_die(ERR_FORMAT, "meta.num_samples of %s is %lld: a head needs at least 1", fpath, (long long)num_samples);
    }
    int64_t fround = -1, fclient = -1;
    if (rec_opt_int(fr, "round", &fround) || rec_opt_int(fr, "client", &fclient))
        tool_fail(err_last());
    if (mv_map_get(fr->meta, "round") && (fround < 0 || fround > MODEL_ROUND_MAX))
        tool_die(ERR_FORMAT, "features %s (field meta.round): %lld is not a round (0 to %d)", fpath,
                 (long long)fround, MODEL_ROUND_MAX);
    if (fclient < -1 || fclient > INT32_MAX)
        tool_die(ERR_FORMAT, "features %s (field meta.client): %lld is not a client id (0 or more; "
                 "-1: the server)", fpath, (long long)fclient);
    if (round < 0 && mv_map_get(fr->meta, "round"))
        round = fround;
    if (round < 0)
        rec_opt_int(mrec, "round", &round); /* checked with the model */
    if (round < 0)
        round = 0;
    if (client == INT64_MIN)
        client = fclient;
    ho.seed = co.seed;
    ho.round = round;
    ho.client = client;

    /* the head goes straight into the model record's fc tensors */
    tensor *tw = (tensor *)rec_get(mrec, "fc.weight", DT_F32, 2, (int64_t[]){C, D});
    tensor *tb = tw ? (tensor *)rec_get(mrec, "fc.bias", DT_F32, 1, (int64_t[]){C}) : NULL;
    if (!tb)
        tool_fail(err_last());
    double t0 = tool_now(), loss = NAN;
    if (head_fit(tw->data, tb->data, x, y, N, D, C, &ho, &loss))
        tool_fail(err_last());
    double dt = tool_now() - t0;
    int64_t steps = (int64_t)ho.epochs * ((N + ho.batch - 1) / ho.batch);
    tool_log(1, "round %lld client %lld: head %dx%d on %lld features, %d epochs x batch %d, "
                "loss %.4f, %.2f s (%.0f steps/s)",
             (long long)round, (long long)client, C, D, (long long)N, ho.epochs, ho.batch, loss,
             dt, dt > 0 ? (double)steps / dt : 0.0);

    if (num_samples >= 0) {
        snprintf(mrec->kind, sizeof mrec->kind, "update");
        rec_set_int(mrec, "num_samples", num_samples);
    }
    if (num_samples >= 0 || client >= 0)
        rec_set_int(mrec, "client", client);
    rec_set_int(mrec, "round", round);
    rec_set_bool(mrec, "retrained", true);
    mval opt = mv_map(), v;
    v = mv_int(ho.epochs), mv_map_put(&opt, "epochs", &v);
    v = mv_int(ho.batch), mv_map_put(&opt, "batch", &v);
    v = mv_float(ho.lr), mv_map_put(&opt, "lr", &v);
    v = mv_float(ho.momentum), mv_map_put(&opt, "momentum", &v);
    v = mv_float(ho.wd), mv_map_put(&opt, "wd", &v);
    v = mv_int((int64_t)ho.seed), mv_map_put(&opt, "seed", &v);
    v = mv_int(N), mv_map_put(&opt, "features", &v);
    v = mv_float(loss), mv_map_put(&opt, "loss", &v);
    const char *method = NULL;
    if (rec_opt_str(fr, "method", &method) == 0 && method)
        v = mv_str(method), mv_map_put(&opt, "method", &v);
    mv_map_put(mrec->meta, "retrain", &opt);
    /* meta.inputs (inputs.h): the features then the model; the options that shape the head */
    inputs in;
    inputs_init(&in);
    inputs_add_file(&in, fpath);
    inputs_add_file(&in, mpath);
    inputs_add_option_int(&in, "epochs", ho.epochs);
    inputs_add_option_int(&in, "batch", ho.batch);
    inputs_add_option_float(&in, "lr", ho.lr);
    inputs_add_option_float(&in, "momentum", ho.momentum);
    inputs_add_option_float(&in, "wd", ho.wd);
    inputs_add_option_int(&in, "seed", (int64_t)ho.seed);
    inputs_add_option_int(&in, "round", round);
    inputs_add_option_int(&in, "client", client);
    inputs_add_option_int(&in, "num_samples", num_samples);
    if (inputs_set(&in, mrec))
        tool_fail(err_last());
    rec_set_str(mrec, "producer", "retrain " FEDSM_VERSION);
    if (ep_write_one(co.out, mrec, &o))
        tool_fail(err_last());
    rec_free(mrec);
    rec_free(fr);
    return 0;
}
