/* ep_zmq.h - the ZeroMQ PUSH/PULL transport behind endpoint.h (DESIGN section 3).
 *
 * Private to lib/io: tools open endpoints through endpoint.h, which dispatches here for
 * tcp://, ipc:// and inproc:// specs.  One record per message.  What a stream means (end
 * records, their counts, producers) is endpoint.c's business, not this file's.  A
 * ROUTER/DEALER transport would sit beside this one with the same shape. */
#ifndef FEDSM_EP_ZMQ_H
#define FEDSM_EP_ZMQ_H

#include "endpoint.h"

typedef struct ep_zmq ep_zmq;

/* Checks a spec's address before any socket: a tcp:// port must be 1..65535 (or '*');
 * 0 or ERR_USAGE naming the endpoint (ZeroMQ itself takes 70000 and waits until a timeout). */
int ep_zmq_check(const char *spec);
/* Opens a PUSH (output) or PULL (input) socket on spec ("@" binds, ">" or none connects);
 * NULL on failure (ERR_IO, message names the address). */
ep_zmq *ep_zmq_open(const char *spec, bool output, const ep_opts *o);
/* Receives one record: 1 with *out owned, 0 on timeout (no message set), < 0 on error.
 * name and index label decoding errors. */
int ep_zmq_recv(ep_zmq *z, const rec_limits *lim, const char *name, long index, record **out);
/* Sends one record as one message; 0 or a negative error naming `name`. */
int ep_zmq_send(ep_zmq *z, const record *r, int zstd_level, const char *name);
/* Closes the socket.  deliver = true lingers (up to the timeout) until queued messages are
 * sent; false drops them.  NULL-safe. */
void ep_zmq_close(ep_zmq *z, bool deliver);

#endif
