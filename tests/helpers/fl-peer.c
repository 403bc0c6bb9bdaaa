/* fl-peer - test helper for the federated tools (tests/tools/federated.sh).
 *   fl-peer big-model WIDTH [--random] OUT
 *       a ResNet-8 model record of that width, zeros (or initialised: incompressible), round
 *       0; prints its tensors' bytes (width 960: 1.1 GB)
 *   fl-peer fake-train ARGS...
 *       stands in for local-train (fl-client --local-train): reads -m MODEL and -d SHARD,
 *       writes -o OUT, an update with the model's tensors, the shard's client, round + 1,
 *       num_samples 1.  FL_PEER_SLEEP=S sleeps first; FL_PEER_CORRUPT=1 writes bytes that
 *       are no record instead; FL_PEER_NAN=1 puts a NaN in the first float tensor;
 *       FL_PEER_FAIL=1 fails with one error line.
 *   fl-peer rogue ADDR CLIENT OVERSIZE
 *       an insecure client behaving badly: says hello as CLIENT; on its task it sends a
 *       message whose header is no record, a result for the previous round, a result with
 *       an OVERSIZE-byte payload, a valid result, the same result again; then it exits.
 * Exit 0 ok, 1 on failure (one line on stderr). */
#include "endpoint.h"
#include "err.h"
#include "fednet.h"
#include "model.h"
#include "tool.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static int big_model(int argc, char **argv)
{
    if (argc < 4)
        tool_die(ERR_USAGE, "big-model WIDTH [--random] OUT");
    model_config c;
    model_config_default(&c, "resnet8");
    c.width = (int)tool_parse_int("WIDTH", argv[2], 1, 4096);
    model *m = model_new(&c);
    if (!m)
        tool_fail(err_last());
    if (argc > 4 && !strcmp(argv[3], "--random"))
        model_init(m, 7);
    record *r = rec_new("model");
    if (!r || model_to_record(m, r, REC_BORROW) || rec_set_int(r, "round", 0))
        tool_fail(err_last() ? err_last() : ERR_INTERNAL);
    size_t bytes = 0;
    for (int i = 0; i < r->n_tensors; i++)
        bytes += r->tensors[i].nbytes;
    ep_opts o;
    ep_opts_default(&o);
    o.zstd_level = 1;
    if (ep_write_one(argv[argc - 1], r, &o))
        tool_fail(err_last());
    printf("%zu\n", bytes); /* the record's tensor bytes */
    rec_free(r);
    model_free(m);
    return 0;
}

/* The update a model would give: its tensors (borrowed), kind update, client, round + 1. */
static record *as_update(record *m, int64_t client)
{
    int64_t round = 0;
    rec_opt_int(m, "round", &round);
    snprintf(m->kind, sizeof m->kind, "update");
    if (rec_set_int(m, "client", client) || rec_set_int(m, "round", round + 1) ||
        rec_set_int(m, "num_samples", 1))
        tool_die(ERR_INTERNAL, "out of memory");
    return m;
}

static int fake_train(int argc, char **argv)
{
    const char *mp = NULL, *dp = NULL, *op = NULL;
    for (int i = 2; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "-m"))
            mp = argv[i + 1];
        else if (!strcmp(argv[i], "-d"))
            dp = argv[i + 1];
        else if (!strcmp(argv[i], "-o"))
            op = argv[i + 1];
    }
    if (!mp || !dp || !op)
        tool_die(ERR_USAGE, "fake-train needs -m, -d and -o");
    const char *s = getenv("FL_PEER_SLEEP");
    if (s)
        sleep((unsigned)atoi(s));
    if (getenv("FL_PEER_FAIL"))
        tool_die(ERR_FORMAT, "fake failure of local-train (FL_PEER_FAIL)");
    if (getenv("FL_PEER_CORRUPT")) {
        FILE *f = fopen(op, "wb");
        if (!f || fputs("this is not a record stream\n", f) < 0 || fclose(f))
            tool_die(ERR_IO, "cannot write %s", op);
        return 0;
    }
    record *shard = ep_read_one(dp, "shard", NULL);
    record *m = ep_read_one(mp, "model", NULL);
    int64_t client = -1;
    if (!shard || !m || rec_get_int(shard, "client", &client))
        tool_fail(err_last());
    as_update(m, client);
    if (getenv("FL_PEER_NAN")) /* a NaN in the first float tensor, as a diverged client sends */
        for (int i = 0; i < m->n_tensors; i++)
            if (m->tensors[i].dtype == DT_F32 && m->tensors[i].nbytes >= 4) {
                ((float *)m->tensors[i].data)[0] = NAN;
                break;
            }
    if (ep_write_one(op, m, NULL))
        tool_fail(err_last());
    rec_free(m);
    rec_free(shard);
    return 0;
}

/* ---- rogue ---- */
static void send_frames(void *s, const void *a, size_t alen, const void *b, size_t blen, bool two)
{
    if (zmq_send(s, a, alen, two ? ZMQ_SNDMORE : 0) < 0 || (two && zmq_send(s, b, blen, 0) < 0))
        tool_die(ERR_IO, "rogue: cannot send: %s", zmq_strerror(errno));
}

static void send_header(void *s, record *h, const void *payload, size_t plen, bool with)
{
    void *buf;
    size_t len;
    if (rec_encode_mem(h, 1, &buf, &len))
        tool_fail(err_last());
    send_frames(s, buf, len, payload, plen, with);
    free(buf);
}

static record *result_header(int64_t client, int64_t round, bool files)
{
    record *h = rec_new("result");
    const char *f[] = {"update"};
    if (!h || rec_set_int(h, "client", client) || rec_set_int(h, "round", round) ||
        rec_set_str(h, "status", "ok") || rec_set_float(h, "train_s", 0.01) ||
        (files && rec_set_strs(h, "files", f, 1)))
        tool_die(ERR_INTERNAL, "out of memory");
    return h;
}

static int rogue(int argc, char **argv)
{
    if (argc != 5)
        tool_die(ERR_USAGE, "rogue ADDR CLIENT OVERSIZE");
    int64_t me = tool_parse_int("CLIENT", argv[3], 0, 1 << 20);
    int64_t over = tool_parse_int("OVERSIZE", argv[4], 1, INT64_MAX);
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 5000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(s, argv[2]))
        tool_die(ERR_IO, "rogue: cannot connect to %s", argv[2]);
    record *hello = rec_new("hello");
    if (!hello || rec_set_int(hello, "client", me) || rec_set_str(hello, "state", "idle") ||
        rec_set_float(hello, "heartbeat_s", 0.2))
        tool_die(ERR_INTERNAL, "out of memory");
    for (int tries = 0; tries < 300; tries++) {
        send_header(s, hello, NULL, 0, false);
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) <= 0)
            continue;
        zmq_msg_t h, p;
        zmq_msg_init(&h);
        zmq_msg_init(&p);
        if (zmq_msg_recv(&h, s, 0) < 0 || !zmq_msg_more(&h) || zmq_msg_recv(&p, s, 0) < 0)
            tool_die(ERR_IO, "rogue: expected a task of two frames");
        record *task = rec_decode_mem(zmq_msg_data(&h), zmq_msg_size(&h), NULL, "task", 0);
        int64_t round = -1;
        if (!task || strcmp(task->kind, "task") || rec_get_int(task, "round", &round))
            tool_die(ERR_FORMAT, "rogue: not a task");
        record *m = fn_stream_one(zmq_msg_data(&p), zmq_msg_size(&p), NULL, "the model", "model");
        if (!m)
            tool_fail(err_last());
        void *ub;
        size_t ul;
        /* the update as a complete stream: the record then its end record */
        char tmp[] = "/tmp/fl-peer-XXXXXX";
        int fd = mkstemp(tmp);
        if (fd < 0)
            tool_die(ERR_IO, "rogue: mkstemp");
        close(fd);
        if (ep_write_one(tmp, as_update(m, me), NULL))
            tool_fail(err_last());
        fn_blob *b = fn_blob_file(tmp);
        unlink(tmp);
        if (!b)
            tool_fail(err_last());
        ub = (void *)fn_blob_data(b);
        ul = fn_blob_len(b);
        /* 1: a header that is no record */
        send_frames(s, "garbage", 7, NULL, 0, false);
        /* 2: a result for the round before */
        record *r = result_header(me, round - 1, true);
        send_header(s, r, ub, ul, true);
        rec_free(r);
        /* 3: a payload over the server's --max-msg (zero pages: no memory used here), on a
         * second connection, which the server closes on reading the size: that close is
         * waited for (10 s at most), so the oversized message has met the server before the
         * valid result below, which the round waits for */
        r = result_header(me, round, true);
        void *big = calloc(1, (size_t)over);
        if (!big)
            tool_die(ERR_INTERNAL, "rogue: out of memory for %lld bytes", (long long)over);
        void *s2 = zmq_socket(ctx, ZMQ_DEALER), *mon = zmq_socket(ctx, ZMQ_PAIR);
        int zero = 0, ten_s = 10000;
        if (!s2 || !mon || zmq_socket_monitor(s2, "inproc://rogue-monitor", ZMQ_EVENT_DISCONNECTED) ||
            zmq_connect(mon, "inproc://rogue-monitor") || zmq_connect(s2, argv[2]))
            tool_die(ERR_IO, "rogue: cannot open the second connection");
        zmq_setsockopt(mon, ZMQ_RCVTIMEO, &ten_s, sizeof ten_s);
        void *hb;
        size_t hl;
        if (rec_encode_mem(r, 1, &hb, &hl))
            tool_fail(err_last());
        zmq_msg_t bm; /* zero-copy: the zero pages are never touched here */
        zmq_msg_init_data(&bm, big, (size_t)over, NULL, NULL);
        if (zmq_send(s2, hb, hl, ZMQ_SNDMORE) < 0 || zmq_msg_send(&bm, s2, 0) < 0)
            tool_die(ERR_IO, "rogue: cannot send the oversized message: %s", zmq_strerror(errno));
        free(hb);
        zmq_msg_t ev;
        zmq_msg_init(&ev);
        bool closed = zmq_msg_recv(&ev, mon, 0) >= 0;
        zmq_msg_close(&ev);
        fprintf(stderr, "fl-peer: the oversized message's connection was %s\n",
                closed ? "closed by the server" : "not closed within 10 s");
        zmq_socket_monitor(s2, NULL, 0);
        zmq_setsockopt(s2, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(mon);
        zmq_close(s2);
        /* 4 and 5: the valid result, twice; then a pause before closing (closing at once
         * lost them here, linger or not) */
        send_header(s, r, ub, ul, true);
        send_header(s, r, ub, ul, true);
        sleep(2);
        rec_free(r);
        zmq_close(s); /* lingers until sent (or the server drops the connection) */
        zmq_ctx_term(ctx);
        free(big);
        fn_blob_unref(b);
        rec_free(m);
        rec_free(task);
        zmq_msg_close(&h);
        zmq_msg_close(&p);
        rec_free(hello);
        return 0;
    }
    tool_die(ERR_IO, "rogue: no task came");
}

int main(int argc, char **argv)
{
    tool_init("fl-peer");
    if (argc >= 2 && !strcmp(argv[1], "big-model"))
        return big_model(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "fake-train"))
        return fake_train(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "rogue"))
        return rogue(argc, argv);
    tool_die(ERR_USAGE, "usage: fl-peer big-model|fake-train|rogue ...");
}
