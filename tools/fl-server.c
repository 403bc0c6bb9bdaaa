/* fl-server - the server side of one federated round across hosts (README "Federated across
 * machines", docs/format.md "Federated messages", docs/algorithms.md 2.2): binds a ZeroMQ
 * ROUTER (CURVE with enrolled client keys, or --insecure), waits for clients to say hello,
 * picks K of those present with the simulation's seeded order (lib/fl/select.h), sends each
 * a task (the global model and the training options), and collects their updates until all
 * answered, went silent, or the deadline passed.  Every update is checked as aggregate would
 * (kind, client, round, tensor layout, finite values) before it is written to the round
 * folder as update-KK.mpk.zst, byte for byte as the client's local-train wrote it; then
 * `aggregate` and `evaluate` run on the folder as in the file pipeline
 * (pipelines/fl-server.sh drives the rounds).
 *
 * The round folder is the state, so a killed server resumes: selected.txt (the round's
 * clients, fixed once chosen), update-KK.mpk.zst and system-KK.txt (each answered client),
 * answered.txt and system.csv (written when the round's collection is over).  A rerun asks
 * only the selected clients without an update.
 *
 * Not here: training (local-train, run by fl-client on the clients' hosts), averaging
 * (aggregate), the transport (lib/io/fednet.c). */
#include "endpoint.h"
#include "err.h"
#include "fedavg.h"
#include "fednet.h"
#include "model.h"
#include "select.h"
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Noreturn static void usage(void)
{
    printf(
        "usage: fl-server --bind ADDR (--key SERVER.key --enrolled DIR | --insecure)\n"
        "                 -m MODEL --dir ROUND_DIR --clients N --per-round K [options]\n"
        "       fl-server --stop --bind ADDR (...keys...) --clients N [--wait SEC]\n"
        "Run the collection of one federated round: pick K of the clients present (the seeded\n"
        "order of aggregate --select, the next present one replacing a client that is away),\n"
        "send each the global model MODEL and the training options, and write each update that\n"
        "passes aggregate's checks to ROUND_DIR/update-KK.mpk.zst.  Rerun on the same ROUND_DIR,\n"
        "it resumes (the selection and the updates already received are kept).\n\n"
        "network:\n"
        "      --bind ADDR      where clients connect: tcp://*:PORT (all interfaces), tcp://IP:PORT,\n"
        "                       ipc://PATH\n"
        "      --key FILE       the server's secret key (fl-keygen); turns on CURVE: every message\n"
        "                       is encrypted and only enrolled keys pass the handshake\n"
        "      --enrolled DIR   who may join: DIR/client-K.pub holds client K's public key\n"
        "      --insecure       no keys, no encryption, anyone who reaches the port may join (a\n"
        "                       trusted network or loopback only)\n"
        "      --max-msg BYTES  largest message accepted from a client (default 64 GiB); a larger\n"
        "                       one closes that client's connection before it is read\n"
        "round:\n"
        "  -m, --model MODEL    the global model sent to the clients; the round is its round + 1\n"
        "      --dir DIR        the round folder (created): selected.txt, update-KK.mpk.zst,\n"
        "                       system-KK.txt, answered.txt, system.csv\n"
        "      --clients N      clients in the federation (ids 0..N-1)\n"
        "      --per-round K    clients to pick\n"
        "      --min-clients M  fewest updates that make a round (default: half of K, rounded up);\n"
        "                       with fewer present after --wait, or fewer answered by the\n"
        "                       deadline, the round fails (exit 1) and a rerun retries it\n"
        "      --wait SEC       how long to wait for the clients the seeded order wants first\n"
        "                       (default 60); once K clients are present, --grace SEC more at\n"
        "                       most (default 5), then the first K present in that order\n"
        "      --deadline SEC   how long the picked clients have to answer (default 600)\n"
        "      --dropout SEC    a picked client silent this long (no heartbeat) is dropped and\n"
        "                       not waited for (default 10)\n"
        "      --label L        first column of system.csv (default fedavg)\n"
        "  -s, --seed S         seed of the selection and of the clients' training (default 7)\n"
        "training options sent to the clients (local-train's; the file pipeline's defaults):\n"
        "      --epochs E (10)  --batch B (32)  --lr LR (0.1)  --momentum M  --wd WD\n"
        "      --aug MODE (batch)  --threads N (1; a client may override it)\n"
        "      --stop           instead of a round: tell every client heard within --wait (or\n"
        "                       until all N are heard) to exit\n"
        "  -q, --quiet / -v, --verbose\n"
        "  -h, --help / -V, --version\n\n"
        "example: fl-server --bind 'tcp://*:5555' --key keys/server.key --enrolled keys/enrolled \\\n"
        "           -m run/round-000/model.mpk.zst --dir run/round-001 --clients 20 --per-round 8\n"
        "exit: 0 collected (at least M updates), 1 too few clients, 2 usage, 3 bad model,\n"
        "      4 I/O or network (bind, keys)\n");
    exit(0);
}

enum { ST_PENDING = 0, ST_ANSWERED, ST_REFUSED, ST_FAILED, ST_DROPPED, ST_MISSED };
static const char *status_name[] = {"pending", "answered", "refused", "failed", "dropped", "missed"};

typedef struct {
    bool seen;         /* has said hello to this server */
    double last_seen;  /* tool_now() of its last message */
    uint8_t peer[256]; /* routing id of its latest connection */
    size_t peer_len;
    bool busy;
    int64_t task_round; /* the round of the last task it reports */
    bool selected;
    int status;
    double task_sent; /* tool_now(), 0 none */
    uint8_t task_peer[256]; /* the connection the task went out on */
    size_t task_peer_len;
    int sends;
    size_t bytes_down, bytes_up;
    double train_s, reply_s;
    int64_t num_samples;
} client;

typedef struct {
    const char *bind, *key, *enrolled, *model, *dir, *label;
    bool insecure, stop;
    int64_t n, k, min, max_msg;
    double wait, grace, deadline, dropout;
    uint64_t seed;
    const char *epochs, *batch, *lr, *momentum, *wd, *aug, *threads;
} srv_args;

static client *cl;
static int64_t round_no;
static int tag_width;
static fn_sock *sock;

static void log_line(const char *line) { fprintf(stderr, "%s: %s\n", tool_name, line); }

static void close_at_exit(void)
{
    fn_close(sock, 0);
    sock = NULL;
}

/* The pipelines' client tag: two digits, one more per factor of ten above 100 clients. */
static int tag_width_for(int64_t n)
{
    int w = 2;
    for (int64_t m = n - 1; m >= 100; m /= 10)
        w++;
    return w;
}

static void path_of(char *buf, size_t len, const char *dir, const char *name, int64_t k,
                    const char *ext)
{
    if (k < 0)
        snprintf(buf, len, "%s/%s%s", dir, name, ext);
    else
        snprintf(buf, len, "%s/%s-%0*lld%s", dir, name, tag_width, (long long)k, ext);
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Writes text to path through a temporary. */
static void save_text(const char *path, const char *text)
{
    if (fn_save(path, text, strlen(text), true))
        tool_fail(err_last());
}

/* Reads "id\n" lines; returns the count; ids must be in 0..n-1. */
static int64_t read_ids(const char *path, int64_t n, int64_t *ids)
{
    FILE *f = fopen(path, "r");
    if (!f)
        tool_die(ERR_IO, "cannot read %s: %s", path, strerror(errno));
    int64_t m = 0;
    char line[64];
    while (fgets(line, sizeof line, f)) {
        int64_t v;
        line[strcspn(line, "\r\n")] = 0;
        if (parse_int(line, 0, n - 1, &v) || m >= n)
            tool_die(ERR_FORMAT, "%s: '%s' is not a client id in 0..%lld (a round folder of another run?)",
                     path, line, (long long)(n - 1));
        ids[m++] = v;
    }
    fclose(f);
    return m;
}

/* ---- messages from clients ---- */
/* A line about what a peer sent, rate-limited by fn_logf (the same line again within 10 s is
 * counted, not printed: a misconfigured client says hello five times a second). */
static void peer_line(const char *line) { tool_log(1, "%s", line); }
static fn_log_state peer_st;
#define peer_log(...) fn_logf(peer_line, &peer_st, __VA_ARGS__)

/* The client a message is from: its key's id under CURVE (the header must agree), its
 * header's without; -1 (logged) when it cannot be one of ours. */
static int64_t sender(const srv_args *a, const fn_msg *m)
{
    int64_t c = -1;
    if (rec_get_int(m->header, "client", &c)) {
        peer_log("dropped a %s message without meta.client", m->header->kind);
        return -1;
    }
    if (m->key_client >= 0 && c != m->key_client) {
        peer_log("dropped a %s message from the key of client %lld claiming to be client %lld",
                 m->header->kind, (long long)m->key_client, (long long)c);
        return -1;
    }
    if (!a->insecure && m->key_client < 0) {
        peer_log("dropped a message without an authenticated key");
        return -1;
    }
    if (c < 0 || c >= a->n) {
        peer_log("dropped a %s message from client %lld: this federation has clients 0..%lld",
                 m->header->kind, (long long)c, (long long)(a->n - 1));
        return -1;
    }
    return c;
}

static void on_hello(client *c, const fn_msg *m)
{
    const char *state = "idle";
    int64_t tr = -1;
    rec_opt_str(m->header, "state", &state);
    rec_opt_int(m->header, "round", &tr);
    if (!c->seen)
        tool_log(2, "client %lld is here", (long long)(c - cl));
    c->seen = true;
    c->busy = strcmp(state, "busy") == 0;
    c->task_round = tr;
}

/* Checks an update as aggregate will: one update record of this client and round, the
 * global model's tensors, the values model_check_record checks (finite weights, sample
 * count, meta).  0 or an error naming the client. */
static int check_update(const record *g, const void *data, size_t len, int64_t k, int64_t *ns)
{
    char name[64];
    snprintf(name, sizeof name, "the update of client %lld", (long long)k);
    record *u = fn_stream_one(data, len, NULL, name, "update");
    if (!u)
        return err_last();
    int64_t uc = -1, ur = -1;
    int rc = 0;
    if (rec_get_int(u, "client", &uc) || rec_get_int(u, "round", &ur) ||
        rec_get_int(u, "num_samples", ns))
        rc = err_last();
    else if (uc != k)
        rc = err_set(ERR_FORMAT, "%s says it is client %lld's (field meta.client)", name, (long long)uc);
    else if (ur != round_no)
        rc = err_set(ERR_FORMAT, "%s is for round %lld, not %lld (field meta.round)", name,
                     (long long)ur, (long long)round_no);
    else if (*ns < 0)
        rc = err_set(ERR_FORMAT, "%s has num_samples %lld", name, (long long)*ns);
    if (!rc) {
        record *both[2] = {(record *)g, u};
        rc = fedavg_check_layout(both, 2);
    }
    if (!rc)
        rc = model_check_record(u); /* finite weights, sane meta: what aggregate checks too */
    rec_free(u);
    return rc;
}

static void on_result(const srv_args *a, const record *g, client *c, const fn_msg *m, double now)
{
    int64_t k = c - cl, r = -1;
    rec_opt_int(m->header, "round", &r);
    if (r != round_no) {
        tool_log(1, "discarded a late result of client %lld for round %lld (this is round %lld)",
                 (long long)k, (long long)r, (long long)round_no);
        return;
    }
    if (!c->selected) {
        tool_log(1, "discarded a result of client %lld: not picked in round %lld", (long long)k,
                 (long long)round_no);
        return;
    }
    if (c->status != ST_PENDING && c->status != ST_DROPPED) {
        tool_log(1, "discarded a duplicate result of client %lld for round %lld (%s already)",
                 (long long)k, (long long)round_no, status_name[c->status]);
        return;
    }
    double train_s = NAN;
    rec_opt_float(m->header, "train_s", &train_s);
    c->train_s = train_s;
    c->reply_s = c->task_sent > 0 ? now - c->task_sent : NAN;
    c->bytes_up += m->bytes;
    const char *st = "ok", *why = "";
    rec_opt_str(m->header, "status", &st);
    rec_opt_str(m->header, "error", &why);
    if (strcmp(st, "ok") != 0) {
        c->status = ST_FAILED;
        tool_log(1, "client %lld could not train round %lld: %.300s", (long long)k,
                 (long long)round_no, why);
        return;
    }
    const char **files = NULL;
    size_t nf = 0;
    size_t len = 0;
    const void *data = NULL;
    if (rec_get_strs(m->header, "files", &files, &nf) == 0 && nf == 1 && m->n_files == 1 &&
        strcmp(files[0], "update") == 0)
        data = fn_msg_file(m, 0, &len);
    free(files);
    int rc = data ? check_update(g, data, len, k, &c->num_samples)
                  : err_set(ERR_FORMAT, "its result carries no update payload");
    if (rc) {
        c->status = ST_REFUSED;
        tool_log(1, "refused the update of client %lld: %s", (long long)k, err_msg());
        return;
    }
    char path[4200], row[256];
    path_of(path, sizeof path, a->dir, "update", k, ".mpk.zst");
    if (fn_save(path, data, len, true))
        tool_fail(err_last());
    snprintf(row, sizeof row, "%zu,%zu,%.3f,%.3f,%lld\n", c->bytes_down, c->bytes_up, c->train_s,
             c->reply_s, (long long)c->num_samples);
    path_of(path, sizeof path, a->dir, "system", k, ".txt");
    save_text(path, row);
    c->status = ST_ANSWERED;
    tool_log(1, "round %lld: update of client %lld accepted (%zu bytes, trained in %.1f s)",
             (long long)round_no, (long long)k, len, c->train_s);
}

/* Receives one message (waiting up to ms milliseconds), handling hellos and (with g)
 * results; false when none came. */
static bool pump_one(const srv_args *a, const record *g, int ms)
{
    fn_msg *m = NULL;
    int rc = fn_recv(sock, ms, &m);
    if (rc == FN_REFUSED) {
        peer_log("%s", err_msg());
        return true;
    }
    if (rc < 0)
        tool_fail(rc);
    if (rc != FN_GOT)
        return false;
    double now = tool_now();
    int64_t k = sender(a, m);
    if (k >= 0) {
        client *c = &cl[k];
        c->last_seen = now;
        memcpy(c->peer, m->peer, m->peer_len);
        c->peer_len = m->peer_len;
        if (!strcmp(m->header->kind, "hello"))
            on_hello(c, m);
        else if (!strcmp(m->header->kind, "result")) {
            c->seen = true;
            if (g)
                on_result(a, g, c, m, now);
            else
                peer_log("discarded a result of client %lld: no round is open", (long long)k);
        } else
            peer_log("dropped a '%s' message from client %lld", m->header->kind, (long long)k);
    }
    fn_msg_free(m);
    return true;
}

/* Waits up to ms for a message, then takes every one already queued: checking a large update
 * takes a while, and the hellos that queued meanwhile must count before anyone is called
 * silent. */
static void pump(const srv_args *a, const record *g, int ms)
{
    if (pump_one(a, g, ms))
        while (pump_one(a, g, 0))
            ;
}

static bool present(const srv_args *a, const client *c, double now)
{
    return c->seen && now - c->last_seen <= a->dropout;
}

/* ---- the task ---- */
static record *task_header(const srv_args *a, int64_t k, double left)
{
    record *h = rec_new("task");
    const char *files[] = {"model"}, *outputs[] = {"update"};
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)a->seed);
    int rc = !h || rec_set_int(h, "round", round_no) || rec_set_int(h, "client", k) ||
             rec_set_strs(h, "files", files, 1) || rec_set_strs(h, "outputs", outputs, 1) ||
             rec_set_str(h, "epochs", a->epochs) || rec_set_str(h, "batch", a->batch) ||
             rec_set_str(h, "lr", a->lr) || rec_set_str(h, "aug", a->aug) ||
             rec_set_str(h, "seed", seed) || rec_set_str(h, "threads", a->threads) ||
             (a->momentum && rec_set_str(h, "momentum", a->momentum)) ||
             (a->wd && rec_set_str(h, "wd", a->wd)) || rec_set_int(h, "max_msg", a->max_msg) ||
             rec_set_float(h, "deadline_s", left);
    if (rc)
        tool_die(ERR_INTERNAL, "out of memory for a task");
    return h;
}

/* Sends the task when the client needs it: never sent, or sent on a connection the client
 * has since replaced (it reconnected or restarted: what was queued on the old one may be
 * lost, the task or the result; a client that answered already answers again from what it
 * kept).  On one connection nothing is lost and a result comes before the hellos sent after
 * it, so nothing else calls for a second send.  At most three sends per client and round. */
static void maybe_send(const srv_args *a, client *c, fn_blob *model, double now, double end)
{
    if (c->sends >= 3 || (c->busy && c->task_round == round_no))
        return; /* (busy with an older round, it drops that for this one) */
    bool need = c->sends == 0 || c->peer_len != c->task_peer_len ||
                memcmp(c->peer, c->task_peer, c->peer_len) != 0;
    if (!need)
        return;
    record *h = task_header(a, c - cl, end - now);
    size_t bytes = 0;
    int rc = fn_send(sock, c->peer, c->peer_len, h, &model, 1, &bytes);
    rec_free(h);
    if (rc) {
        tool_log(2, "cannot send the task to client %lld now (%s); will retry", (long long)(c - cl),
                 err_msg());
        return;
    }
    c->sends++;
    c->task_sent = now;
    memcpy(c->task_peer, c->peer, c->peer_len);
    c->task_peer_len = c->peer_len;
    c->bytes_down += bytes;
    c->busy = true; /* until its next hello says otherwise */
    tool_log(c->sends > 1 ? 1 : 2, "round %lld: task sent to client %lld%s", (long long)round_no,
             (long long)(c - cl), c->sends > 1 ? " again" : "");
}

/* ---- modes ---- */
static int run_stop(const srv_args *a)
{
    double t0 = tool_now();
    for (;;) {
        pump(a, NULL, 100);
        int64_t heard = 0;
        for (int64_t i = 0; i < a->n; i++)
            heard += cl[i].seen;
        if (heard == a->n || tool_now() - t0 > a->wait)
            break;
    }
    int64_t told = 0;
    for (int64_t i = 0; i < a->n; i++) {
        if (!cl[i].seen)
            continue;
        record *h = rec_new("bye");
        if (!h || rec_set_int(h, "client", i))
            tool_die(ERR_INTERNAL, "out of memory");
        if (fn_send(sock, cl[i].peer, cl[i].peer_len, h, NULL, 0, NULL) == 0)
            told++;
        rec_free(h);
    }
    tool_log(1, "told %lld client%s to stop", (long long)told, told == 1 ? "" : "s");
    fn_close(sock, 2000);
    sock = NULL;
    return 0;
}

static void write_system_csv(const srv_args *a, const int64_t *sel, int64_t nsel)
{
    size_t cap = 256 + (size_t)nsel * 160, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        tool_die(ERR_INTERNAL, "out of memory");
    len += (size_t)snprintf(buf, cap,
                            "label,round,client,status,bytes_to_client,bytes_from_client,train_s,"
                            "reply_s,num_samples\n");
    for (int64_t i = 0; i < nsel; i++) {
        client *c = &cl[sel[i]];
        char path[4200], row[256] = "";
        path_of(path, sizeof path, a->dir, "system", sel[i], ".txt");
        if (c->status == ST_ANSWERED) {
            FILE *f = fopen(path, "r");
            if (!f || !fgets(row, sizeof row, f))
                tool_die(ERR_IO, "cannot read %s", path);
            fclose(f);
            row[strcspn(row, "\n")] = 0;
        } else {
            char t[32] = "", r[32] = "";
            if (c->status == ST_FAILED || c->status == ST_REFUSED) {
                if (isfinite(c->train_s))
                    snprintf(t, sizeof t, "%.3f", c->train_s);
                snprintf(r, sizeof r, "%.3f", c->reply_s);
            }
            snprintf(row, sizeof row, "%zu,%zu,%s,%s,", c->bytes_down, c->bytes_up, t, r);
        }
        len += (size_t)snprintf(buf + len, cap - len, "%s,%lld,%lld,%s,%s\n", a->label,
                                (long long)round_no, (long long)sel[i], status_name[c->status], row);
    }
    char path[4200];
    path_of(path, sizeof path, a->dir, "system", -1, ".csv");
    save_text(path, buf);
    free(buf);
}

/* The round's global model: its layout (g) and its bytes (sent as they are). */
static record *g_model;
static fn_blob *g_bytes;

/* Reads the model before the socket opens: a client is only told of a server that is ready
 * (decoding a large model takes a while). */
static void load_model(const srv_args *a)
{
    record *g = g_model = ep_read_one(a->model, "model", NULL);
    if (!g)
        tool_fail(err_last());
    /* checked as every reader of a model checks it (layout and values: no NaN model, no
     * tensor missing, goes out); this costs three times the model's size for a moment */
    model *m = model_from_record(g);
    if (!m)
        tool_fail(err_last());
    model_free(m);
    /* only its layout is needed from here on (the updates are checked against it) */
    for (int i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].owned) {
            aligned_free(g->tensors[i].data);
            g->tensors[i].data = NULL;
            g->tensors[i].owned = false;
        }
    int64_t gr = 0;
    rec_opt_int(g, "round", &gr);
    round_no = gr + 1;
    if (!(g_bytes = fn_blob_file(a->model)))
        tool_fail(err_last());
}

static int run_round(const srv_args *a)
{
    const record *g = g_model;
    fn_blob *model = g_bytes;
    if (mkdir(a->dir, 0755) && errno != EEXIST)
        tool_die(ERR_IO, "cannot create %s: %s", a->dir, strerror(errno));
    char path[4200];
    path_of(path, sizeof path, a->dir, "answered", -1, ".txt");
    if (file_exists(path))
        tool_die(ERR_USAGE, "round %lld's collection in %s is already over (answered.txt exists)",
                 (long long)round_no, a->dir);

    int64_t *sel = malloc((size_t)a->n * sizeof *sel), nsel = 0;
    int64_t *order = malloc((size_t)a->n * sizeof *order);
    bool *here = calloc((size_t)a->n, sizeof *here);
    if (!sel || !order || !here)
        tool_die(ERR_INTERNAL, "out of memory for %lld clients", (long long)a->n);
    double t0 = tool_now();
    path_of(path, sizeof path, a->dir, "selected", -1, ".txt");
    if (file_exists(path)) {
        nsel = read_ids(path, a->n, sel);
        tool_log(1, "round %lld: resuming with the clients picked before", (long long)round_no);
    } else {
        /* wait until the clients the seeded order wants first are present; or, once K
         * clients are, --grace seconds more; or --wait in all */
        fl_select_order(order, a->n, a->seed, round_no);
        int64_t *want = malloc((size_t)a->k * sizeof *want);
        if (!want)
            tool_die(ERR_INTERNAL, "out of memory");
        fl_select_present(want, a->k, order, a->n, NULL);
        double enough_since = -1;
        for (;;) {
            pump(a, NULL, 100);
            double now = tool_now();
            bool all = true;
            int64_t n_here = 0;
            for (int64_t i = 0; i < a->k; i++)
                all = all && present(a, &cl[want[i]], now);
            for (int64_t i = 0; i < a->n; i++)
                n_here += present(a, &cl[i], now);
            if (n_here < a->k)
                enough_since = -1;
            else if (enough_since < 0)
                enough_since = now;
            if (all || now - t0 > a->wait || (enough_since >= 0 && now - enough_since > a->grace))
                break;
        }
        free(want);
        double now = tool_now();
        int64_t npresent = 0;
        for (int64_t i = 0; i < a->n; i++)
            npresent += here[i] = present(a, &cl[i], now);
        nsel = fl_select_present(sel, a->k, order, a->n, here);
        if (nsel < a->min)
            tool_die(ERR_RUNTIME,
                     "round %lld: only %lld of the %lld clients are present after %.0f s, fewer "
                     "than --min-clients %lld (rerun to try again)",
                     (long long)round_no, (long long)npresent, (long long)a->n, a->wait,
                     (long long)a->min);
        char *txt = malloc((size_t)nsel * 24 + 1);
        if (!txt)
            tool_die(ERR_INTERNAL, "out of memory");
        size_t len = 0;
        txt[0] = 0;
        for (int64_t i = 0; i < nsel; i++)
            len += (size_t)sprintf(txt + len, "%lld\n", (long long)sel[i]);
        save_text(path, txt);
        free(txt);
        tool_log(1, "round %lld: %lld of %lld clients present, picked %lld%s", (long long)round_no,
                 (long long)npresent, (long long)a->n, (long long)nsel,
                 nsel < a->k ? " (fewer than --per-round: all present)" : "");
    }
    for (int64_t i = 0; i < nsel; i++) {
        client *c = &cl[sel[i]];
        c->selected = true;
        path_of(path, sizeof path, a->dir, "update", sel[i], ".mpk.zst");
        if (file_exists(path))
            c->status = ST_ANSWERED;
    }

    /* collect */
    double start = tool_now(), end = start + a->deadline;
    for (;;) {
        double now = tool_now();
        bool open = false;
        for (int64_t i = 0; i < nsel; i++) {
            client *c = &cl[sel[i]];
            if (c->status == ST_DROPPED && present(a, c, now))
                c->status = ST_PENDING; /* back before the deadline */
            if (c->status != ST_PENDING)
                continue;
            double heard = c->seen ? c->last_seen : start;
            if (now - heard > a->dropout) {
                c->status = ST_DROPPED;
                tool_log(1, "round %lld: client %lld dropped out (silent for %.1f s)",
                         (long long)round_no, (long long)sel[i], now - heard);
                continue;
            }
            open = true;
            if (present(a, c, now))
                maybe_send(a, c, model, now, end);
        }
        if (!open || now > end)
            break;
        pump(a, g, 100);
    }
    int64_t answered = 0;
    char *txt = malloc((size_t)nsel * 24 + 1);
    if (!txt)
        tool_die(ERR_INTERNAL, "out of memory");
    size_t len = 0;
    txt[0] = 0;
    for (int64_t i = 0; i < nsel; i++) {
        client *c = &cl[sel[i]];
        if (c->status == ST_PENDING) {
            c->status = ST_MISSED;
            tool_log(1, "round %lld: client %lld missed the deadline (%.0f s)", (long long)round_no,
                     (long long)sel[i], a->deadline);
        }
        if (c->status == ST_ANSWERED) {
            answered++;
            len += (size_t)sprintf(txt + len, "%lld\n", (long long)sel[i]);
        }
    }
    write_system_csv(a, sel, nsel);
    fn_close(sock, 0);
    sock = NULL;
    fn_blob_unref(model);
    rec_free(g_model);
    if (answered < a->min) {
        free(txt);
        tool_die(ERR_RUNTIME,
                 "round %lld: %lld of %lld picked clients answered by the deadline, fewer than "
                 "--min-clients %lld (%s/system.csv says who; rerun to ask the others again)",
                 (long long)round_no, (long long)answered, (long long)nsel, (long long)a->min, a->dir);
    }
    path_of(path, sizeof path, a->dir, "answered", -1, ".txt");
    save_text(path, txt);
    free(txt);
    tool_log(1, "round %lld: %lld of %lld answered in %.1f s", (long long)round_no,
             (long long)answered, (long long)nsel, tool_now() - t0);
    free(sel);
    free(order);
    free(here);
    return 0;
}

/* A number option kept as the text given (sent to the clients verbatim), checked here. */
static const char *num_opt(const char *opt, const char *v, double lo, double hi, bool integer)
{
    if (integer)
        tool_parse_int(opt, v, (int64_t)lo, (int64_t)hi);
    else
        tool_parse_double(opt, v, lo, hi);
    return v;
}

int main(int argc, char **argv)
{
    tool_init("fl-server");
    signal(SIGPIPE, SIG_IGN);
    srv_args a = {.n = -1, .k = -1, .min = -1, .max_msg = 64LL << 30, .wait = 60, .grace = 5, .deadline = 600,
                  .dropout = 10, .label = "fedavg", .epochs = "10", .batch = "32", .lr = "0.1",
                  .aug = "batch", .threads = "1"};
    tool_common co = {.usage = usage, .seed = 7};
    enum { O_BIND = 0x100, O_KEY, O_ENROLLED, O_INSECURE, O_MAXMSG, O_DIR, O_CLIENTS, O_PER,
           O_MIN, O_WAIT, O_GRACE, O_DEADLINE, O_DROPOUT, O_LABEL, O_EPOCHS, O_BATCH, O_LR, O_MOM, O_WD,
           O_AUG, O_STOP };
    static const struct option lo[] = {
        {"bind", 1, 0, O_BIND},         {"key", 1, 0, O_KEY},
        {"enrolled", 1, 0, O_ENROLLED}, {"insecure", 0, 0, O_INSECURE},
        {"max-msg", 1, 0, O_MAXMSG},    {"model", 1, 0, 'm'},
        {"dir", 1, 0, O_DIR},           {"clients", 1, 0, O_CLIENTS},
        {"per-round", 1, 0, O_PER},     {"min-clients", 1, 0, O_MIN},
        {"wait", 1, 0, O_WAIT},         {"deadline", 1, 0, O_DEADLINE},
        {"grace", 1, 0, O_GRACE},
        {"dropout", 1, 0, O_DROPOUT},   {"label", 1, 0, O_LABEL},
        {"epochs", 1, 0, O_EPOCHS},     {"batch", 1, 0, O_BATCH},
        {"lr", 1, 0, O_LR},             {"momentum", 1, 0, O_MOM},
        {"wd", 1, 0, O_WD},             {"aug", 1, 0, O_AUG},
        {"stop", 0, 0, O_STOP},         {0, 0, 0, 0}};
    int c;
    while ((c = tool_getopt(argc, argv, "m:", lo, &co)) != -1) {
        switch (c) {
        case O_BIND: a.bind = optarg; break;
        case O_KEY: a.key = optarg; break;
        case O_ENROLLED: a.enrolled = optarg; break;
        case O_INSECURE: a.insecure = true; break;
        case O_MAXMSG: a.max_msg = tool_parse_int("--max-msg", optarg, 1024, INT64_MAX); break;
        case 'm': a.model = optarg; break;
        case O_DIR: a.dir = optarg; break;
        case O_CLIENTS: a.n = tool_parse_int("--clients", optarg, 1, 1 << 20); break;
        case O_PER: a.k = tool_parse_int("--per-round", optarg, 1, 1 << 20); break;
        case O_MIN: a.min = tool_parse_int("--min-clients", optarg, 1, 1 << 20); break;
        case O_WAIT: a.wait = tool_parse_double("--wait", optarg, 0, 1e7); break;
        case O_GRACE: a.grace = tool_parse_double("--grace", optarg, 0, 1e7); break;
        case O_DEADLINE: a.deadline = tool_parse_double("--deadline", optarg, 0, 1e7); break;
        case O_DROPOUT: a.dropout = tool_parse_double("--dropout", optarg, 0.1, 1e7); break;
        case O_LABEL: a.label = optarg; break;
        case O_EPOCHS: a.epochs = num_opt("--epochs", optarg, 0, 1000000, true); break;
        case O_BATCH: a.batch = num_opt("--batch", optarg, 1, 1 << 24, true); break;
        case O_LR: a.lr = num_opt("--lr", optarg, 0, 1e6, false); break;
        case O_MOM: a.momentum = num_opt("--momentum", optarg, 0, 1, false); break;
        case O_WD: a.wd = num_opt("--wd", optarg, 0, 1e3, false); break;
        case O_AUG:
            if (strcmp(optarg, "batch") && strcmp(optarg, "sample") && strcmp(optarg, "none"))
                tool_usage_error("--aug '%s' is not one of batch, sample, none", optarg);
            a.aug = optarg;
            break;
        case O_STOP: a.stop = true; break;
        }
    }
    a.seed = co.seed;
    if (co.threads >= 0) {
        static char th[24];
        snprintf(th, sizeof th, "%d", co.threads);
        a.threads = th;
    }
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (!a.bind)
        tool_usage_error("no address: give --bind tcp://*:PORT");
    if (fn_check_addr(a.bind))
        tool_fail(err_last());
    if (a.insecure && (a.key || a.enrolled))
        tool_usage_error("--insecure turns encryption off: give it without --key and --enrolled");
    if (!a.insecure && (!a.key || !a.enrolled))
        tool_usage_error("give --key SERVER.key and --enrolled DIR (CURVE), or --insecure");
    if (a.n < 0)
        tool_usage_error("give --clients N (the federation's size)");
    if (!a.stop) {
        if (!a.model || !a.dir || !*a.model || !*a.dir)
            tool_usage_error("give -m MODEL and --dir ROUND_DIR (or --stop)");
        if (a.k < 0)
            tool_usage_error("give --per-round K");
        if (a.k > a.n)
            tool_usage_error("--per-round %lld is more than --clients %lld", (long long)a.k,
                             (long long)a.n);
        if (a.min < 0)
            a.min = (a.k + 1) / 2;
        if (a.min > a.k)
            tool_usage_error("--min-clients %lld is more than --per-round %lld", (long long)a.min,
                             (long long)a.k);
        if (co.out)
            tool_usage_error("fl-server writes into --dir, not -o");
    }
    if (strchr(a.label, ',') || strchr(a.label, '"') || strchr(a.label, '\n'))
        tool_usage_error("--label '%s' holds a comma, quote or newline (it goes into a CSV)", a.label);
    tag_width = tag_width_for(a.n);
    cl = calloc((size_t)a.n, sizeof *cl);
    if (!cl)
        tool_die(ERR_INTERNAL, "out of memory for %lld clients", (long long)a.n);
    fn_enrolled *en = NULL;
    if (a.enrolled && fn_enrolled_read(a.enrolled, &en))
        tool_fail(err_last());
    for (int i = 0; en && i < en->n; i++)
        if (en->ids[i] >= a.n)
            tool_log(1, "%s enrolls client %lld, but this federation has clients 0..%lld",
                     a.enrolled, (long long)en->ids[i], (long long)(a.n - 1));
    if (!a.stop)
        load_model(&a);
    fn_opts fo = {.secret_key = a.key, .enrolled = en, .max_msg = a.max_msg, .log = log_line};
    sock = fn_server_open(a.bind, &fo);
    if (!sock)
        tool_fail(err_last());
    atexit(close_at_exit); /* a failed round still closes its socket (and its ipc file) */
    tool_log(2, "listening on %s (%s)", a.bind, a.insecure ? "insecure" : "CURVE");
    int rc = a.stop ? run_stop(&a) : run_round(&a);
    fn_enrolled_free(en);
    free(cl);
    return rc;
}
