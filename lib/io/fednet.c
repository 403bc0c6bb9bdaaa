/* fednet.c - the federated transport (API and rules in fednet.h): CURVE key files, the
 * enrollment directory, the server's ROUTER with its ZAP handler thread, the client's
 * DEALER, handshake events, and messages of a header record plus payload frames.
 * Not here: what the messages mean (tools/fl-server.c, tools/fl-client.c). */
#include "fednet.h"

#include "ep_zmq.h"
#include "err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

/* ---- keys ---- */
static int write_key_file(const char *path, const char *comment, const char *key, int mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0)
        return err_set(ERR_IO, "cannot create %s: %s", path, strerror(errno));
    char buf[512];
    int n = snprintf(buf, sizeof buf, "# %s\n%s\n", comment, key);
    bool ok = n > 0 && (size_t)n < sizeof buf && write(fd, buf, (size_t)n) == n &&
              fchmod(fd, (mode_t)mode) == 0 && fsync(fd) == 0;
    int e = errno;
    if (close(fd) || !ok) {
        unlink(path);
        return err_set(ERR_IO, "cannot write %s: %s", path, strerror(ok ? errno : e));
    }
    return 0;
}

int fn_keygen(const char *prefix, const char *comment, bool force)
{
    char pub[FN_KEY_LEN + 1], sec[FN_KEY_LEN + 1];
    if (zmq_curve_keypair(pub, sec))
        return err_set(ERR_INTERNAL, "cannot make a CURVE key pair: %s (libzmq without libsodium?)",
                       zmq_strerror(errno));
    size_t n = strlen(prefix) + 8;
    char *pp = malloc(n), *sp = malloc(n);
    if (!pp || !sp) {
        free(pp);
        free(sp);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    snprintf(pp, n, "%s.pub", prefix);
    snprintf(sp, n, "%s.key", prefix);
    int rc = 0;
    struct stat st;
    if (!force && (stat(pp, &st) == 0 || stat(sp, &st) == 0))
        rc = err_set(ERR_IO, "%s exists: keys are never overwritten (remove it, or --force)",
                     stat(sp, &st) == 0 ? sp : pp);
    if (!rc && force) {
        unlink(pp);
        unlink(sp);
    }
    char c1[300], c2[300];
    snprintf(c1, sizeof c1, "fedsm CURVE secret key (Z85) of %s: keep it private", comment);
    snprintf(c2, sizeof c2, "fedsm CURVE public key (Z85) of %s", comment);
    if (!rc)
        rc = write_key_file(sp, c1, sec, 0600);
    if (!rc && (rc = write_key_file(pp, c2, pub, 0644)))
        unlink(sp);
    memset(sec, 0, sizeof sec);
    free(pp);
    free(sp);
    return rc;
}

static bool is_z85_key(const char *s)
{
    static const char z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              ".-:+=^!/*?&<>()[]{}@%$#";
    if (strlen(s) != FN_KEY_LEN)
        return false;
    for (const char *p = s; *p; p++)
        if (!strchr(z85, *p))
            return false;
    uint8_t bin[32];
    return zmq_z85_decode(bin, s) != NULL;
}

int fn_key_read(const char *path, bool secret, char key[FN_KEY_LEN + 1])
{
    key[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(ERR_IO, "cannot open key file %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && secret && (st.st_mode & 077)) {
        fclose(f);
        return err_set(ERR_IO,
                       "secret key file %s may be read by others (mode %04o): run chmod 600 %s",
                       path, (unsigned)(st.st_mode & 07777), path);
    }
    char line[256];
    int rc = err_set(ERR_FORMAT, "%s holds no key (a 40-character Z85 line, as fl-keygen writes)", path);
    while (fgets(line, sizeof line, f)) {
        size_t n = strcspn(line, "\r\n");
        line[n] = 0;
        while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
            line[--n] = 0;
        if (line[0] == '#' || n == 0)
            continue;
        if (!is_z85_key(line))
            rc = err_set(ERR_FORMAT, "%s: not a CURVE key (expected 40 Z85 characters, as fl-keygen writes)",
                         path);
        else {
            memcpy(key, line, FN_KEY_LEN + 1);
            rc = 0;
        }
        break;
    }
    memset(line, 0, sizeof line);
    fclose(f);
    return rc;
}

int fn_key_public(const char secret[FN_KEY_LEN + 1], char pub[FN_KEY_LEN + 1])
{
    if (zmq_curve_public(pub, secret))
        return err_set(ERR_FORMAT, "not a CURVE secret key");
    return 0;
}

/* ---- enrollment ---- */
void fn_enrolled_free(fn_enrolled *e)
{
    if (!e)
        return;
    free(e->ids);
    free(e->keys);
    free(e);
}

int fn_enrolled_read(const char *dir, fn_enrolled **out)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d)
        return err_set(ERR_IO, "cannot read the enrollment directory %s: %s", dir, strerror(errno));
    fn_enrolled *e = calloc(1, sizeof *e);
    int cap = 0, rc = 0;
    struct dirent *de;
    while (e && !rc && (de = readdir(d))) {
        const char *n = de->d_name;
        size_t len = strlen(n), digits = strspn(n + 7, "0123456789");
        if (strncmp(n, "client-", 7) || digits == 0 || digits > 9 || len != 7 + digits + 4 ||
            strcmp(n + 7 + digits, ".pub"))
            continue;
        if (e->n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *ids = realloc(e->ids, (size_t)cap * sizeof *ids);
            if (ids)
                e->ids = ids;
            char(*keys)[FN_KEY_LEN + 1] = realloc(e->keys, (size_t)cap * sizeof *keys);
            if (keys)
                e->keys = keys;
            if (!ids || !keys) {
                rc = err_set(ERR_INTERNAL, "out of memory");
                break;
            }
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, n);
        e->ids[e->n] = strtoll(n + 7, NULL, 10);
        rc = fn_key_read(path, false, e->keys[e->n]);
        e->n++;
    }
    closedir(d);
    if (!e)
        return err_set(ERR_INTERNAL, "out of memory");
    if (!rc && e->n == 0)
        rc = err_set(ERR_IO, "%s enrolls no client (no client-K.pub files)", dir);
    /* sort by id (keys follow), then refuse one client twice and one key for two clients */
    for (int i = 1; !rc && i < e->n; i++)
        for (int j = i; j > 0 && e->ids[j] < e->ids[j - 1]; j--) {
            int64_t t = e->ids[j];
            e->ids[j] = e->ids[j - 1];
            e->ids[j - 1] = t;
            char k[FN_KEY_LEN + 1];
            memcpy(k, e->keys[j], sizeof k);
            memcpy(e->keys[j], e->keys[j - 1], sizeof k);
            memcpy(e->keys[j - 1], k, sizeof k);
        }
    for (int i = 0; !rc && i < e->n; i++)
        for (int j = i + 1; !rc && j < e->n; j++) {
            if (e->ids[i] == e->ids[j])
                rc = err_set(ERR_FORMAT, "%s enrolls client %lld twice (client-K.pub with and without leading zeros?)",
                             dir, (long long)e->ids[i]);
            else if (!strcmp(e->keys[i], e->keys[j]))
                rc = err_set(ERR_FORMAT, "%s gives clients %lld and %lld the same key", dir,
                             (long long)e->ids[i], (long long)e->ids[j]);
        }
    if (rc) {
        fn_enrolled_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

/* ---- sockets ---- */
/* A client gives up after this many handshakes in a row fail without a word from the server
 * (about a second of ZeroMQ's reconnects): a server that is down or restarting refuses the
 * connection instead, which is not a failed handshake, and is waited for. */
#define FN_HANDSHAKE_TRIES 10

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void fn_logf(fn_log_fn log, fn_log_state *st, const char *fmt, ...)
{
    if (!log)
        return;
    char line[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    double t = now_s();
    if (strcmp(line, st->last) == 0 && t - st->t < 10) {
        st->repeats++;
        return;
    }
    if (st->repeats) {
        char more[760];
        snprintf(more, sizeof more, "(the line before came %d more time%s)", st->repeats,
                 st->repeats == 1 ? "" : "s");
        log(more);
    }
    log(line);
    snprintf(st->last, sizeof st->last, "%s", line);
    st->t = t;
    st->repeats = 0;
}

struct fn_sock {
    void *ctx, *sock, *mon;
    bool server, bound;
    fn_log_fn log;
    fn_log_state mon_log, zap_log; /* the main thread's, the ZAP thread's */
    int hs_failures;            /* client: handshakes failed since the last that succeeded */
    char addr[512];
    /* ZAP handler (server with CURVE) */
    pthread_t zap;
    bool zap_running;
    atomic_int zap_stop;
    void *zap_sock;
    int n_keys;
    uint8_t (*keys)[32];
    int64_t *key_ids;
};

/* One ZAP request (RFC 27): version, request id, domain, address, identity, mechanism,
 * credentials; the reply: version, request id, status code, status text, user id, metadata.
 * CURVE's credential is the client's 32-byte public key. */
static void zap_serve_one(fn_sock *s)
{
    zmq_msg_t f[8];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s->zap_sock, 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        more = zmq_msg_more(&m);
        if (n < 8) {
            zmq_msg_init(&f[n]);
            zmq_msg_move(&f[n++], &m);
        }
        zmq_msg_close(&m);
    }
    if (n < 6) { /* not a ZAP request: nothing to answer */
        for (int i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
        return;
    }
    const char *status = "400", *text = "key not enrolled";
    char user[32] = "";
    char mech[16] = "", addr[64] = "";
    size_t ml = zmq_msg_size(&f[5]) < sizeof mech - 1 ? zmq_msg_size(&f[5]) : sizeof mech - 1;
    memcpy(mech, zmq_msg_data(&f[5]), ml);
    size_t al = zmq_msg_size(&f[3]) < sizeof addr - 1 ? zmq_msg_size(&f[3]) : sizeof addr - 1;
    memcpy(addr, zmq_msg_data(&f[3]), al);
    for (size_t i = 0; i < al; i++)
        if (addr[i] < 32 || addr[i] > 126)
            addr[i] = '?';
    if (strcmp(mech, "CURVE") == 0 && n >= 7 && zmq_msg_size(&f[6]) == 32) {
        const uint8_t *k = zmq_msg_data(&f[6]);
        for (int i = 0; i < s->n_keys; i++)
            if (memcmp(k, s->keys[i], 32) == 0) {
                status = "200";
                text = "OK";
                snprintf(user, sizeof user, "%lld", (long long)s->key_ids[i]);
                break;
            }
        if (!user[0]) {
            char z[FN_KEY_LEN + 1];
            zmq_z85_encode(z, k, 32);
            fn_logf(s->log, &s->zap_log, "refused a client at the handshake: its key %s (from %s) is not enrolled",
                  z, addr);
        }
    } else {
        text = "CURVE required";
        fn_logf(s->log, &s->zap_log, "refused a client at the handshake: mechanism %s (from %s), not CURVE",
              mech, addr);
    }
    const char *reply[6] = {"1.0", NULL, status, text, user, ""};
    for (int i = 0; i < 6; i++) {
        int flags = i < 5 ? ZMQ_SNDMORE : 0;
        if (i == 1)
            zmq_send(s->zap_sock, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), flags);
        else
            zmq_send(s->zap_sock, reply[i], strlen(reply[i]), flags);
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
}

static void *zap_main(void *arg)
{
    fn_sock *s = arg;
    while (!atomic_load(&s->zap_stop)) {
        zmq_pollitem_t it = {s->zap_sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, 100);
        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0)
            zap_serve_one(s);
    }
    return NULL;
}

void fn_close(fn_sock *s, int linger_ms)
{
    if (!s)
        return;
    if (s->zap_running) {
        atomic_store(&s->zap_stop, 1);
        pthread_join(s->zap, NULL);
    }
    if (s->zap_sock)
        zmq_close(s->zap_sock);
    if (s->mon) {
        zmq_socket_monitor(s->sock, NULL, 0);
        int zero = 0;
        zmq_setsockopt(s->mon, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(s->mon);
    }
    if (s->sock) {
        zmq_setsockopt(s->sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
        zmq_close(s->sock);
    }
    if (s->ctx)
        while (zmq_ctx_term(s->ctx) != 0 && errno == EINTR)
            ;
    if (s->server && s->bound && !strncmp(s->addr, "ipc://", 6))
        unlink(s->addr + 6); /* libzmq leaves the socket file of an ipc endpoint it bound */
    free(s->keys);
    free(s->key_ids);
    free(s);
}

/* Watches the socket's handshakes through a monitor (an inproc PAIR). */
static int open_monitor(fn_sock *s)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://fednet-monitor-%p", (void *)s);
    int ev = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
    if (zmq_socket_monitor(s->sock, ep, ev))
        return err_set(ERR_INTERNAL, "cannot monitor the socket: %s", zmq_strerror(errno));
    s->mon = zmq_socket(s->ctx, ZMQ_PAIR);
    if (!s->mon || zmq_connect(s->mon, ep))
        return err_set(ERR_INTERNAL, "cannot connect the socket monitor: %s", zmq_strerror(errno));
    return 0;
}

int fn_check_addr(const char *addr)
{
    if (strncmp(addr, "tcp://", 6) && strncmp(addr, "ipc://", 6) && strncmp(addr, "inproc://", 9))
        return err_set(ERR_USAGE, "'%s' is not a ZeroMQ address (tcp://HOST:PORT or ipc://PATH)",
                       addr);
    if (!strcmp(addr, "ipc://") || !strcmp(addr, "inproc://"))
        return err_set(ERR_USAGE, "'%s' names no path", addr);
    return ep_zmq_check(addr);
}

static fn_sock *sock_new(const char *addr, const fn_opts *o, bool server)
{
    if (fn_check_addr(addr))
        return NULL;
    fn_sock *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    s->server = server;
    s->log = o->log;
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    s->ctx = zmq_ctx_new();
    s->sock = s->ctx ? zmq_socket(s->ctx, server ? ZMQ_ROUTER : ZMQ_DEALER) : NULL;
    if (!s->sock) {
        err_set(ERR_IO, "cannot create a ZeroMQ socket for %s: %s", addr, zmq_strerror(errno));
        fn_close(s, 0);
        return NULL;
    }
    int one = 1, zero = 0;
    int64_t maxmsg = o->max_msg;
    zmq_setsockopt(s->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(s->sock, ZMQ_TCP_KEEPALIVE, &one, sizeof one);
    if (server)
        zmq_setsockopt(s->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    else
        zmq_setsockopt(s->sock, ZMQ_IMMEDIATE, &one, sizeof one);
    return s;
}

static int set_key(void *sock, int opt, const char *key)
{
    return zmq_setsockopt(sock, opt, key, FN_KEY_LEN + 1)
               ? err_set(ERR_INTERNAL, "cannot set a CURVE key: %s", zmq_strerror(errno))
               : 0;
}

fn_sock *fn_server_open(const char *addr, const fn_opts *o)
{
    fn_sock *s = sock_new(addr, o, true);
    if (!s)
        return NULL;
    int rc = 0;
    if (o->secret_key) {
        char sec[FN_KEY_LEN + 1], pub[FN_KEY_LEN + 1];
        if (!zmq_has("curve"))
            rc = err_set(ERR_IO, "this libzmq has no CURVE (built without libsodium); only --insecure works");
        if (!rc && !o->enrolled)
            rc = err_set(ERR_USAGE, "a CURVE server needs the enrolled clients' keys");
        if (!rc)
            rc = fn_key_read(o->secret_key, true, sec);
        if (!rc)
            rc = fn_key_public(sec, pub);
        int one = 1;
        if (!rc && zmq_setsockopt(s->sock, ZMQ_CURVE_SERVER, &one, sizeof one))
            rc = err_set(ERR_INTERNAL, "cannot make a CURVE server: %s", zmq_strerror(errno));
        if (!rc)
            rc = set_key(s->sock, ZMQ_CURVE_SECRETKEY, sec);
        if (!rc)
            rc = set_key(s->sock, ZMQ_CURVE_PUBLICKEY, pub);
        memset(sec, 0, sizeof sec);
        zmq_setsockopt(s->sock, ZMQ_ZAP_DOMAIN, "fedsm", 5);
        /* the ZAP handler is bound before the socket: libzmq admits every CURVE key while
         * no handler listens on inproc://zeromq.zap.01 */
        if (!rc) {
            const fn_enrolled *e = o->enrolled;
            s->n_keys = e->n;
            s->keys = calloc((size_t)e->n, sizeof *s->keys);
            s->key_ids = calloc((size_t)e->n, sizeof *s->key_ids);
            if (!s->keys || !s->key_ids)
                rc = err_set(ERR_INTERNAL, "out of memory");
            for (int i = 0; !rc && i < e->n; i++) {
                s->key_ids[i] = e->ids[i];
                if (!zmq_z85_decode(s->keys[i], e->keys[i]))
                    rc = err_set(ERR_FORMAT, "enrolled key of client %lld is not Z85",
                                 (long long)e->ids[i]);
            }
        }
        if (!rc) {
            s->zap_sock = zmq_socket(s->ctx, ZMQ_REP);
            if (!s->zap_sock || zmq_bind(s->zap_sock, "inproc://zeromq.zap.01"))
                rc = err_set(ERR_INTERNAL, "cannot start the ZAP handler: %s", zmq_strerror(errno));
        }
        if (!rc) {
            if (pthread_create(&s->zap, NULL, zap_main, s))
                rc = err_set(ERR_INTERNAL, "cannot start the ZAP handler thread");
            else
                s->zap_running = true;
        }
    }
    if (!rc)
        rc = open_monitor(s);
    if (!rc && zmq_bind(s->sock, addr))
        rc = err_set(ERR_IO, "cannot bind %s: %s", addr, zmq_strerror(errno));
    s->bound = !rc;
    if (rc) {
        fn_close(s, 0);
        return NULL;
    }
    return s;
}

fn_sock *fn_client_open(const char *addr, const fn_opts *o)
{
    fn_sock *s = sock_new(addr, o, false);
    if (!s)
        return NULL;
    int rc = 0;
    if (o->secret_key) {
        char sec[FN_KEY_LEN + 1], pub[FN_KEY_LEN + 1], srv[FN_KEY_LEN + 1];
        if (!zmq_has("curve"))
            rc = err_set(ERR_IO, "this libzmq has no CURVE (built without libsodium); only --insecure works");
        if (!rc && !o->server_key)
            rc = err_set(ERR_USAGE, "a CURVE client needs the server's public key");
        if (!rc)
            rc = fn_key_read(o->secret_key, true, sec);
        if (!rc)
            rc = fn_key_read(o->server_key, false, srv);
        if (!rc)
            rc = fn_key_public(sec, pub);
        if (!rc)
            rc = set_key(s->sock, ZMQ_CURVE_SERVERKEY, srv);
        if (!rc)
            rc = set_key(s->sock, ZMQ_CURVE_PUBLICKEY, pub);
        if (!rc)
            rc = set_key(s->sock, ZMQ_CURVE_SECRETKEY, sec);
        memset(sec, 0, sizeof sec);
    }
    if (!rc)
        rc = open_monitor(s);
    if (!rc && zmq_connect(s->sock, addr))
        rc = err_set(ERR_IO, "cannot connect to %s: %s", addr, zmq_strerror(errno));
    if (rc) {
        fn_close(s, 0);
        return NULL;
    }
    return s;
}

/* ---- messages ---- */
typedef struct {
    zmq_msg_t f[FN_MAX_FILES];
} frames;

const void *fn_msg_file(const fn_msg *m, int i, size_t *len)
{
    frames *fr = m->priv;
    if (i < 0 || i >= m->n_files) {
        *len = 0;
        return NULL;
    }
    *len = zmq_msg_size(&fr->f[i]);
    return zmq_msg_data(&fr->f[i]);
}

void fn_msg_free(fn_msg *m)
{
    if (!m)
        return;
    frames *fr = m->priv;
    for (int i = 0; fr && i < m->n_files; i++)
        zmq_msg_close(&fr->f[i]);
    free(fr);
    rec_free(m->header);
    free(m);
}

static const char *protocol_error(uint32_t v)
{
    switch (v) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "the two sides use different security (one CURVE, the other none: --insecure "
               "on one side only?)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        return "the CURVE handshake failed (a wrong server public key?)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE:
        return "the CURVE key exchange failed";
    default:
        return "a ZeroMQ protocol error";
    }
}

/* Reads one monitor event; returns 0, or ERR_IO when a client's handshake was refused for
 * good (retrying with the same keys cannot help). */
static int on_monitor(fn_sock *s)
{
    zmq_msg_t a, b;
    zmq_msg_init(&a);
    zmq_msg_init(&b);
    int rc = 0;
    if (zmq_msg_recv(&a, s->mon, ZMQ_DONTWAIT) < 0)
        goto out;
    if (!zmq_msg_more(&a) || zmq_msg_recv(&b, s->mon, 0) < 0 || zmq_msg_size(&a) < 6)
        goto out;
    const uint8_t *d = zmq_msg_data(&a);
    uint16_t ev;
    uint32_t v;
    memcpy(&ev, d, 2);
    memcpy(&v, d + 2, 4);
    char where[300];
    size_t wl = zmq_msg_size(&b) < sizeof where - 1 ? zmq_msg_size(&b) : sizeof where - 1;
    memcpy(where, zmq_msg_data(&b), wl);
    where[wl] = 0;
    if (s->server) {
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
            fn_logf(s->log, &s->mon_log, "a peer failed the handshake on %s: %s", where, protocol_error(v));
        else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
            fn_logf(s->log, &s->mon_log,
                  "a peer failed the handshake on %s (it hung up: a client without CURVE keys, or "
                  "with another server key?)",
                  where);
        /* HANDSHAKE_FAILED_AUTH: the ZAP handler has logged the key */
    } else {
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            rc = err_set(ERR_IO,
                         "the server at %s refused this client's key at the handshake (status %u): "
                         "its public key is not enrolled there",
                         where, v);
        else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
                 v == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
            rc = err_set(ERR_IO, "cannot talk to the server at %s: %s", where, protocol_error(v));
        else if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            s->hs_failures = 0;
        else if (++s->hs_failures >= FN_HANDSHAKE_TRIES) /* the server hangs up, or no detail */
            rc = err_set(ERR_IO,
                         "cannot talk to the server at %s: the handshake failed %d times in a row "
                         "(%s)",
                         where, s->hs_failures,
                         ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                             ? protocol_error(v)
                             : "it hangs up: CURVE on one side only, or a wrong server key?");
    }
out:
    zmq_msg_close(&a);
    zmq_msg_close(&b);
    return rc;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Receives the frames of one message (the first is ready). */
static int recv_message(fn_sock *s, fn_msg **out)
{
    fn_msg *m = calloc(1, sizeof *m);
    frames *fr = calloc(1, sizeof *fr);
    if (!m || !fr) {
        free(m);
        free(fr);
        return err_set(ERR_INTERNAL, "out of memory");
    }
    m->priv = fr;
    m->key_client = -1;
    int nframes = 0, more = 1, rc = 0;
    zmq_msg_t hdr;
    zmq_msg_init(&hdr);
    bool have_hdr = false;
    char why[200] = "";
    while (more) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, s->sock, 0) < 0) {
            zmq_msg_close(&f);
            rc = err_set(ERR_IO, "cannot receive on %s: %s", s->addr, zmq_strerror(errno));
            break;
        }
        more = zmq_msg_more(&f);
        m->bytes += zmq_msg_size(&f);
        int idx = nframes++ - (s->server ? 1 : 0); /* -1 routing id, 0 header, 1.. payloads */
        if (idx == -1) {
            m->peer_len = zmq_msg_size(&f) < sizeof m->peer ? zmq_msg_size(&f) : sizeof m->peer;
            memcpy(m->peer, zmq_msg_data(&f), m->peer_len);
            zmq_msg_close(&f);
        } else if (idx == 0) {
            const char *uid = zmq_msg_gets(&f, "User-Id");
            if (uid && *uid)
                m->key_client = strtoll(uid, NULL, 10);
            zmq_msg_move(&hdr, &f);
            zmq_msg_close(&f);
            have_hdr = true;
        } else if (idx <= FN_MAX_FILES) {
            zmq_msg_init(&fr->f[m->n_files]);
            zmq_msg_move(&fr->f[m->n_files++], &f);
            zmq_msg_close(&f);
        } else {
            zmq_msg_close(&f);
            snprintf(why, sizeof why, "more than %d payload frames", FN_MAX_FILES);
        }
    }
    if (!rc && !have_hdr)
        snprintf(why, sizeof why, "no header frame");
    if (!rc && !why[0] && zmq_msg_size(&hdr) > FN_MAX_HEADER)
        snprintf(why, sizeof why, "a header frame of %zu bytes (at most %d)", zmq_msg_size(&hdr),
                 FN_MAX_HEADER);
    char who[64];
    if (m->key_client >= 0)
        snprintf(who, sizeof who, "client %lld (by its key)", (long long)m->key_client);
    else
        snprintf(who, sizeof who, "%s", s->server ? "a peer" : "the server");
    if (!rc && !why[0]) {
        rec_limits lim;
        rec_limits_default(&lim);
        lim.max_record_bytes = 1 << 20;
        lim.max_items = 4096;
        lim.max_depth = 8;
        lim.max_tensors = 0;
        m->header = rec_decode_mem(zmq_msg_data(&hdr), zmq_msg_size(&hdr), &lim, "message header", 0);
        if (!m->header)
            snprintf(why, sizeof why, "%s", err_msg());
    }
    if (have_hdr)
        zmq_msg_close(&hdr);
    if (!rc && why[0]) {
        err_set(ERR_FORMAT, "dropped a malformed message from %s: %s", who, why);
        rc = FN_REFUSED;
    }
    if (rc) {
        fn_msg_free(m);
        return rc;
    }
    *out = m;
    return FN_GOT;
}

int fn_recv(fn_sock *s, int timeout_ms, fn_msg **out)
{
    *out = NULL;
    double end = now_ms() + timeout_ms;
    for (;;) {
        zmq_pollitem_t it[2] = {{s->sock, 0, ZMQ_POLLIN, 0}, {s->mon, 0, ZMQ_POLLIN, 0}};
        long left = timeout_ms < 0 ? -1 : (long)(end - now_ms());
        if (timeout_ms >= 0 && left < 0)
            left = 0;
        int rc = zmq_poll(it, 2, left);
        if (rc < 0) {
            if (errno == EINTR)
                return err_set(ERR_IO, "interrupted");
            return err_set(ERR_IO, "cannot poll %s: %s", s->addr, zmq_strerror(errno));
        }
        if (it[1].revents & ZMQ_POLLIN) {
            int mr = on_monitor(s);
            if (mr)
                return mr;
            continue;
        }
        if (it[0].revents & ZMQ_POLLIN)
            return recv_message(s, out);
        if (rc == 0)
            return FN_TIMEOUT;
    }
}

/* ---- payload blobs and sending ---- */
struct fn_blob {
    void *data;
    size_t len;
    bool mapped;
    atomic_int refs;
};

fn_blob *fn_blob_file(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        err_set(ERR_IO, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    fn_blob *b = calloc(1, sizeof *b);
    if (!b || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        err_set(b ? ERR_IO : ERR_INTERNAL, "cannot read %s: %s", path,
                b ? "not a regular file" : "out of memory");
        free(b);
        close(fd);
        return NULL;
    }
    b->len = (size_t)st.st_size;
    atomic_init(&b->refs, 1);
    if (b->len) {
        b->data = mmap(NULL, b->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (b->data == MAP_FAILED) {
            err_set(ERR_IO, "cannot map %s: %s", path, strerror(errno));
            free(b);
            close(fd);
            return NULL;
        }
        b->mapped = true;
    }
    close(fd);
    return b;
}

const void *fn_blob_data(const fn_blob *b) { return b->data; }
size_t fn_blob_len(const fn_blob *b) { return b->len; }

void fn_blob_unref(fn_blob *b)
{
    if (!b || atomic_fetch_sub(&b->refs, 1) != 1)
        return;
    if (b->mapped)
        munmap(b->data, b->len);
    free(b);
}

static void blob_done(void *data, void *hint)
{
    (void)data;
    fn_blob_unref(hint);
}

static void free_done(void *data, void *hint)
{
    (void)hint;
    free(data);
}

int fn_send(fn_sock *s, const uint8_t *peer, size_t peer_len, const record *header,
            fn_blob *const *files, int n_files, size_t *bytes)
{
    if (bytes)
        *bytes = 0;
    if (n_files > FN_MAX_FILES)
        return err_set(ERR_INTERNAL, "%d payloads in one message (at most %d)", n_files, FN_MAX_FILES);
    void *hbuf;
    size_t hlen;
    int rc = rec_encode_mem(header, 3, &hbuf, &hlen);
    if (rc)
        return rc;
    size_t total = hlen + peer_len;
    int flags = ZMQ_DONTWAIT;
    if (s->server && zmq_send(s->sock, peer, peer_len, flags | ZMQ_SNDMORE) < 0) {
        free(hbuf);
        return err_set(ERR_IO, "cannot send to that client now: %s", zmq_strerror(errno));
    }
    zmq_msg_t m;
    zmq_msg_init_data(&m, hbuf, hlen, free_done, NULL);
    if (zmq_msg_send(&m, s->sock, flags | (n_files ? ZMQ_SNDMORE : 0)) < 0) {
        int e = errno;
        zmq_msg_close(&m);
        return err_set(ERR_IO, "cannot send on %s now: %s", s->addr, zmq_strerror(e));
    }
    for (int i = 0; i < n_files; i++) {
        fn_blob *b = files[i];
        if (b->len) {
            atomic_fetch_add(&b->refs, 1);
            zmq_msg_init_data(&m, b->data, b->len, blob_done, b);
        } else {
            zmq_msg_init(&m);
        }
        total += b->len;
        if (zmq_msg_send(&m, s->sock, flags | (i + 1 < n_files ? ZMQ_SNDMORE : 0)) < 0) {
            int e = errno;
            zmq_msg_close(&m);
            return err_set(ERR_IO, "cannot send on %s: %s", s->addr, zmq_strerror(e));
        }
    }
    if (bytes)
        *bytes = total;
    return 0;
}

/* ---- payloads ---- */
typedef struct {
    const uint8_t *p;
    size_t len, pos;
} memsrc;

static long mem_read(void *ctx, void *buf, size_t cap)
{
    memsrc *m = ctx;
    size_t n = m->len - m->pos < cap ? m->len - m->pos : cap;
    memcpy(buf, m->p + m->pos, n);
    m->pos += n;
    return (long)n;
}

record *fn_stream_one(const void *data, size_t len, const rec_limits *lim, const char *name,
                      const char *kind)
{
    memsrc m = {data, len, 0};
    rec_instream *in = rec_instream_new(mem_read, &m, name, lim);
    if (!in) {
        err_set(ERR_INTERNAL, "out of memory");
        return NULL;
    }
    record *r = NULL, *e = NULL, *x = NULL;
    int rc = rec_instream_next(in, &r);
    if (rc == 0)
        rc = err_set(ERR_FORMAT, "%s is empty (no record)", name);
    else if (rc == 1 && !strcmp(r->kind, "end"))
        rc = err_set(ERR_FORMAT, "%s holds no record, only its end record", name);
    else if (rc == 1 && kind && strcmp(r->kind, kind))
        rc = err_set(ERR_FORMAT, "wrong record kind (stream %s, record 0, field kind): expected %s, got %s",
                     name, kind, r->kind);
    if (rc == 1) {
        rc = rec_instream_next(in, &e);
        int64_t count = -1;
        if (rc == 0)
            rc = err_set(ERR_FORMAT, "%s ends without its end record (cut short?)", name);
        else if (rc == 1 && strcmp(e->kind, "end"))
            rc = err_set(ERR_FORMAT, "%s holds more than one record; expected one %s", name,
                         kind ? kind : "record");
        else if (rc == 1 && (rec_get_int(e, "count", &count) || count != 1))
            rc = err_set(ERR_FORMAT, "%s: its end record counts %lld records, 1 sent", name,
                         (long long)count);
    }
    if (rc == 1) {
        rc = rec_instream_next(in, &x);
        if (rc == 1)
            rc = err_set(ERR_FORMAT, "%s holds records after its end record", name);
        else if (rc == 0)
            rc = 1;
    }
    rec_free(e);
    rec_free(x);
    rec_instream_free(in);
    if (rc != 1) {
        rec_free(r);
        return NULL;
    }
    return r;
}

int fn_save(const char *path, const void *data, size_t len, bool sync)
{
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp)
        return err_set(ERR_INTERNAL, "out of memory");
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int rc = err_set(ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    const uint8_t *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        p += w;
        left -= (size_t)w;
    }
    int rc = 0;
    if (left || (sync && fsync(fd)))
        rc = err_set(ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    if (close(fd) && !rc)
        rc = err_set(ERR_IO, "cannot close %s: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path))
        rc = err_set(ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}
