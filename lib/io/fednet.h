/* fednet.h - the federated transport of DESIGN section 3: clients on other hosts connect a
 * ZeroMQ DEALER to the server's ROUTER; with CURVE keys every byte is encrypted and only
 * enrolled client keys get past the handshake (a ZAP handler in the server's process); a
 * message is one small header record followed by payload frames, each payload the bytes of a
 * complete record stream (a file as a tool wrote it, `end` record included).  The protocol
 * (which headers, which payloads, when) is docs/format.md "Federated messages"; the round
 * logic is tools/fl-server.c and tools/fl-client.c.
 *
 * Keys are Z85 text files (zmq_curve_keypair): NAME.pub holds the public key, NAME.key the
 * secret one (mode 0600; a secret key file that group or others may read is refused, as ssh
 * does).  The server's enrollment is a directory of client-K.pub files: the client whose key
 * is in client-K.pub is client K, and the server learns K from the key, not from what the
 * client says.
 *
 * Not here: the record codec (record.h), PUSH/PULL endpoints (endpoint.h). */
#ifndef FEDSM_FEDNET_H
#define FEDSM_FEDNET_H

#include "record.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FN_KEY_LEN 40     /* a Z85-encoded 32-byte CURVE key */
#define FN_MAX_FILES 8    /* payload frames per message */
#define FN_MAX_HEADER 65536 /* bytes of a header frame */

/* ---- keys ---- */
/* Writes a fresh key pair: PREFIX.pub (0644) and PREFIX.key (0600).  Refuses (ERR_IO) when
 * either exists, unless force.  comment goes on the files' first line after '#'. */
int fn_keygen(const char *prefix, const char *comment, bool force);
/* Reads a key file: '#' lines are comments, the first other line is the 40-character Z85
 * key.  secret: the file must not be readable by group or others (ERR_IO saying how to fix
 * it).  key receives 41 bytes (NUL-terminated).  ERR_IO unreadable, ERR_FORMAT not a key. */
int fn_key_read(const char *path, bool secret, char key[FN_KEY_LEN + 1]);
/* The public key of a secret one (Z85 both); 0 or ERR_FORMAT. */
int fn_key_public(const char secret[FN_KEY_LEN + 1], char pub[FN_KEY_LEN + 1]);

/* Who may join: the client-K.pub files of a directory. */
typedef struct fn_enrolled {
    int n;
    int64_t *ids;            /* client ids, ascending */
    char (*keys)[FN_KEY_LEN + 1];
} fn_enrolled;
/* Reads every DIR/client-K.pub (K decimal); other files are ignored.  ERR_IO unreadable or
 * empty; ERR_FORMAT a bad key, one client twice, or one key for two clients. */
int fn_enrolled_read(const char *dir, fn_enrolled **out);
void fn_enrolled_free(fn_enrolled *e); /* NULL-safe */

/* ---- sockets ---- */
/* A line for the operator's log (refused keys, failed handshakes); called from the ZAP
 * thread too, so it must be thread-safe (a single fprintf is). */
typedef void (*fn_log_fn)(const char *line);

/* Log lines of one thread (one state per thread): a line repeating the previous one within
 * 10 s is counted, not printed (a peer retrying a refused handshake ten times a second, or a
 * misconfigured client saying hello five times a second, must not flood the log); the count
 * is said with the next line printed.  LOG NULL: silent. */
typedef struct fn_log_state {
    char last[700];
    double t;
    int repeats;
} fn_log_state;
void fn_logf(fn_log_fn log, fn_log_state *st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

typedef struct fn_opts {
    const char *secret_key;  /* own secret key file; NULL: no encryption (--insecure) */
    const char *server_key;  /* client: the server's public key file */
    const fn_enrolled *enrolled; /* server: who may join (borrowed; required with CURVE) */
    int64_t max_msg;         /* ZMQ_MAXMSGSIZE for incoming messages; -1 no limit */
    fn_log_fn log;           /* NULL: silent */
} fn_opts;

typedef struct fn_sock fn_sock;
/* Checks an address before any work: tcp://HOST:PORT (PORT 1..65535, or '*' to bind),
 * ipc://PATH or inproc://NAME; 0 or ERR_USAGE naming it.  The opens below check it too. */
int fn_check_addr(const char *addr);
/* Server: a ROUTER bound to addr (tcp://HOST:PORT, ipc://PATH).  With a secret key the socket is
 * a CURVE server and the ZAP handler admits exactly the enrolled keys, logging every other
 * one.  NULL on failure (ERR_IO naming the address). */
fn_sock *fn_server_open(const char *addr, const fn_opts *o);
/* Client: a DEALER connected to addr (reconnects by itself after the server restarts);
 * sends only on completed connections (a message sent while there is none is refused, not
 * queued).  NULL on failure. */
fn_sock *fn_client_open(const char *addr, const fn_opts *o);
/* Closes; linger_ms: how long queued messages may still go out (0 drops them).  NULL-safe. */
void fn_close(fn_sock *s, int linger_ms);

/* ---- messages ---- */
typedef struct fn_msg {
    uint8_t peer[256]; /* the sender's routing id (server side) */
    size_t peer_len;
    int64_t key_client; /* the client id its CURVE key is enrolled as; -1 without CURVE */
    record *header;     /* owned */
    int n_files;
    size_t bytes;       /* every frame's bytes together */
    void *priv;         /* the payload frames */
} fn_msg;
/* Payload i (0-based): its bytes (borrowed from m), *len its size. */
const void *fn_msg_file(const fn_msg *m, int i, size_t *len);
void fn_msg_free(fn_msg *m); /* NULL-safe */

enum { FN_TIMEOUT = 0, FN_GOT = 1, FN_REFUSED = 2 };
/* Waits up to timeout_ms (-1 forever) for a message.  FN_GOT: *out owned; FN_TIMEOUT;
 * FN_REFUSED: a malformed message (too many frames, a header over FN_MAX_HEADER or not a
 * record) was dropped, err_msg() says why and from whom; < 0: the socket failed.  Client
 * side, a handshake the server refused (key not enrolled, no CURVE where the server wants
 * it, ten failed handshakes in a row) is ERR_IO with a sentence saying so: retrying cannot
 * help. */
int fn_recv(fn_sock *s, int timeout_ms, fn_msg **out);

/* Payload bytes shared between sends (ZeroMQ frees them when the last send is done). */
typedef struct fn_blob fn_blob;
/* The bytes of a file (mapped).  NULL on failure (ERR_IO). */
fn_blob *fn_blob_file(const char *path);
const void *fn_blob_data(const fn_blob *b);
size_t fn_blob_len(const fn_blob *b);
void fn_blob_unref(fn_blob *b); /* NULL-safe */

/* Sends header + payloads (borrowed, each kept alive by ZeroMQ until sent) to peer (server;
 * NULL/0 on a client).  0 sent (queued); ERR_IO when the peer is not connected now or its
 * queue is full (the caller may retry later); *bytes (may be NULL) gets the bytes queued. */
int fn_send(fn_sock *s, const uint8_t *peer, size_t peer_len, const record *header,
            fn_blob *const *files, int n_files, size_t *bytes);

/* ---- payloads ---- */
/* Decodes data as one complete record stream holding exactly one record of kind (NULL: any)
 * and its `end` record; returns the record (owned) or NULL, err_msg naming `name`. */
record *fn_stream_one(const void *data, size_t len, const rec_limits *lim, const char *name,
                      const char *kind);
/* Writes len bytes to path through path.tmp.PID, renamed when complete (synced to disk
 * first when sync); 0 or ERR_IO. */
int fn_save(const char *path, const void *data, size_t len, bool sync);

#endif
