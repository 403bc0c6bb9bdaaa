/* ep_zmq.c - the ZeroMQ PUSH/PULL transport behind endpoint.h (API in ep_zmq.h): one
 * context per process, sockets with the endpoint's timeouts and message-size limit, one
 * record per message.  Not here: end records and their counts (endpoint.c), the record
 * codec (record.c). */
#include "ep_zmq.h"

#include "err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct ep_zmq {
    void *s;
    int timeout_ms;
};

/* ---- ZeroMQ context (one per process, terminated with its last socket) ---- */
static void *zctx;
static int zsockets;
static void *zmq_context(void)
{
    if (!zctx)
        zctx = zmq_ctx_new();
    return zctx;
}

/* Closes a socket; with the last one the context is terminated, which waits (up to each
 * socket's linger) until queued messages are delivered.  Without it a producer that exits
 * right after rec_writer_close() loses what is still queued, the end record included. */
static void zsock_close(void *s)
{
    zmq_close(s);
    if (--zsockets == 0) {
        while (zmq_ctx_term(zctx) != 0 && errno == EINTR)
            ;
        zctx = NULL;
    }
}

int ep_zmq_check(const char *spec)
{
    const char *addr = spec + (spec[0] == '@' || spec[0] == '>');
    if (strncmp(addr, "tcp://", 6))
        return 0;
    const char *colon = strrchr(addr + 6, ':');
    if (!colon)
        return err_set(ERR_USAGE, "endpoint %s: no tcp port (tcp://HOST:PORT, PORT in 1..65535 or '*')", spec);
    const char *port = colon + 1;
    if (!strcmp(port, "*"))
        return 0;
    size_t n = strspn(port, "0123456789");
    if (!n || port[n])
        return err_set(ERR_USAGE, "endpoint %s: tcp port '%s' is not a number (1..65535, or '*')", spec, port);
    long v = n > 9 ? 0 : strtol(port, NULL, 10);
    if (v < 1 || v > 65535)
        return err_set(ERR_USAGE, "endpoint %s: tcp port %s is outside 1..65535", spec, port);
    return 0;
}

ep_zmq *ep_zmq_open(const char *spec, bool output, const ep_opts *o)
{
    int type = output ? ZMQ_PUSH : ZMQ_PULL;
    bool bind = spec[0] == '@';
    const char *addr = spec + (spec[0] == '@' || spec[0] == '>');
    ep_zmq *z = calloc(1, sizeof *z);
    if (!z) {
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    z->timeout_ms = o->timeout_ms;
    void *ctx = zmq_context();
    void *s = ctx ? zmq_socket(ctx, type) : NULL;
    if (!s) {
        err_set(ERR_IO, "cannot create ZeroMQ socket for %s: %s", spec, zmq_strerror(errno));
        free(z);
        return NULL;
    }
    zsockets++;
    int to = o->timeout_ms;
    int linger = o->timeout_ms < 0 ? -1 : o->timeout_ms;
    int one = 1;
    int64_t maxmsg = o->max_msg_bytes;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &to, sizeof to);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &to, sizeof to);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (type == ZMQ_PULL)
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (type == ZMQ_PUSH && !bind) /* block (up to the timeout) until a peer is there */
        zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof one);
    int rc = bind ? zmq_bind(s, addr) : zmq_connect(s, addr);
    if (rc) {
        err_set(ERR_IO, "cannot %s %s: %s", bind ? "bind" : "connect to", addr,
                zmq_strerror(errno));
        zsock_close(s);
        free(z);
        return NULL;
    }
    z->s = s;
    return z;
}

int ep_zmq_recv(ep_zmq *z, const rec_limits *lim, const char *name, long index, record **out)
{
    *out = NULL;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, z->s, 0) < 0) {
        int e = errno;
        zmq_msg_close(&m);
        if (e == EAGAIN)
            return 0;
        return err_set(ERR_IO, "cannot receive from %s: %s", name, zmq_strerror(e));
    }
    *out = rec_decode_mem(zmq_msg_data(&m), zmq_msg_size(&m), lim, name, index);
    zmq_msg_close(&m);
    return *out ? 1 : err_last();
}

static void free_msg(void *data, void *hint)
{
    (void)hint;
    free(data);
}

int ep_zmq_send(ep_zmq *z, const record *r, int zstd_level, const char *name)
{
    void *buf;
    size_t len;
    int rc = rec_encode_mem(r, zstd_level, &buf, &len);
    if (rc)
        return rc;
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, buf, len, free_msg, NULL)) {
        free(buf);
        return err_set(ERR_INTERNAL, "zmq_msg_init_data failed");
    }
    if (zmq_msg_send(&m, z->s, 0) < 0) {
        int e = errno;
        zmq_msg_close(&m);
        if (e == EAGAIN)
            return err_set(ERR_IO, "no consumer took a record on %s within %.1f s (is the reader running?)",
                           name, z->timeout_ms / 1000.0);
        return err_set(ERR_IO, "cannot send on %s: %s", name, zmq_strerror(e));
    }
    return 0;
}

void ep_zmq_close(ep_zmq *z, bool deliver)
{
    if (!z)
        return;
    if (!deliver) { /* an aborted stream is not worth waiting for */
        int zero = 0;
        zmq_setsockopt(z->s, ZMQ_LINGER, &zero, sizeof zero);
    }
    zsock_close(z->s); /* lingers up to the timeout to deliver what is queued */
    free(z);
}
