/*
 * libipc.h: the C API of libipc, compatible with the original LibIPC header.
 *
 * A program written for the original compiles and runs against this library
 * unchanged: same functions, names, argument order, event numbers and return
 * conventions. Where the original was broken, this one differs, as noted:
 *
 *  - The switch callback declarators are well formed (the original's declared
 *    functions returning pointers), and ipc_set_switch_callbacks really sets them.
 *  - A payload larger than the caller's buffer is never silently truncated:
 *    ipc_wait_event, ipc_read and ipc_read_fd return IPC_ETOOSMALL (-3), set *len
 *    to the size needed and keep the message, so that the next call with a buffer
 *    that large returns it.
 *  - Messages to one peer leave in the order scheduled; empty messages are
 *    messages; a peer announcing an oversized message is disconnected (and only it).
 *  - CONNECTION reports the new client (index and fd), not the listening socket.
 *  - Sends never raise SIGPIPE.
 *
 * Two additions: ipc_set_queue_limit, opt-in backpressure for ipc_schedule (by
 * default it queues without bound, as the original did), and ipc_service_share,
 * a service served by several contexts, one per thread.
 *
 * Connections are named by `index` (a stable id, never reused) or by their file
 * descriptor. Nothing here is thread-safe: use one context per thread.
 *
 * Link with -lipc.
 */
#ifndef LIBIPC_H
#define LIBIPC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Event types reported by ipc_wait_event (numbering of the original). */
enum event_types {
	ERROR = 0,        /* an error not tied to one message (e.g. accept failed) */
	CONNECTION,       /* a client connected to one of our services */
	DISCONNECTION,    /* a connection went away (index/originfd say which) */
	MESSAGE_RX,       /* a message arrived (in buffer, *len bytes) */
	MESSAGE_TX,       /* a scheduled message was completely written */
	TIMER,            /* no event for the time set by ipc_context_timer */
	EXTERNAL,         /* an fd added by ipc_add_external is readable */
	SWITCH_RX,        /* data read from a switched fd was passed to its peer */
	SWITCH_TX,        /* relayed data was written to a switched fd */
};

/* Return values of switch callbacks. */
enum cb_event_types {
	CB_NO_ERROR = 0,  /* done */
	CB_ERROR,         /* failure: both switched fds are closed */
	CB_FD_CLOSING,    /* the fd is closing: end the switch as on EOF */
	CB_IGNORE,        /* nothing to pass on this time */
};

/* Extra return codes (negative, as all failures). */
#define IPC_EGENERIC   -1  /* failure; see the function */
#define IPC_EQUEUEFULL -2  /* ipc_schedule, after ipc_set_queue_limit: the peer's
                              queue is at the limit; nothing was queued, try again
                              after MESSAGE_TX */
#define IPC_ETOOSMALL  -3  /* the caller's buffer is too small: *len = size needed,
                              the message is kept for the next call */

/* Switch callbacks. `in` reads from `origin` and writes one complete LibIPC frame
 * (4-byte big-endian length, then payload) into `mcontent`, whose capacity is
 * *mlen on entry; it sets *mlen to the frame's size. `out` writes the frame it is
 * given (length prefix included) to `origin`. */
typedef enum cb_event_types (*ipc_switch_cb_in) (int origin, char *mcontent, uint32_t *mlen);
typedef enum cb_event_types (*ipc_switch_cb_out) (int origin, const char *mcontent, uint32_t mlen);

/* Allocates a context (run directory: $RUNDIR, default /tmp/.libipc-run).
 * Returns 0, or -1. */
int ipc_context_init (void **ctx);

/* Closes every connection (service sockets are removed), frees the context and
 * sets *ctx to NULL. */
void ipc_context_deinit (void **ctx);

/* Creates service `name` ($RUNDIR/name, mode 0660; a second instance is refused).
 * *servicefd receives the listening fd. Returns 0, or -1 (invalid name, already
 * running, run directory not usable). */
int ipc_service_init (void *ctx, int *servicefd, const char *name, uint16_t len);

/* Not in the original: a service on every core. Makes context `ctx` serve too
 * the service that context `from` created (`servicefd`, from ipc_service_init):
 * run one context per thread, each waiting on its own events; a new client
 * goes to one of them, and lives there. *newfd receives ctx's fd for the
 * service. The socket stays until every context serving it has closed it.
 * Call it while no other thread uses `from` (e.g. before starting the
 * threads); ctx and from must differ. Returns 0, or -1. */
int ipc_service_share (void *ctx, void *from, int servicefd, int *newfd);

/* Connects to service `name`; *servicefd receives the connection's fd.
 * Returns 0, or -1 (invalid name, no such service). */
int ipc_connect_service (void *ctx, int *servicefd, const char *name, uint16_t len);

/* Sends a message now, blocking until it (and anything scheduled before it on
 * the same fd) is written. `fd` need not belong to the context. Returns 0, or -1
 * (peer gone: never SIGPIPE). */
int ipc_write (void *ctx, int fd, const char *mcontent, uint32_t mlen);

/* Queues a message (copied) for `fd`; it is written by a following
 * ipc_wait_event, after everything queued before it. Returns 0, or -1 (unknown
 * fd, too large). As in the original, there is no bound but memory: a peer
 * that does not read makes the queue grow. After ipc_set_queue_limit, it may
 * also return IPC_EQUEUEFULL. */
int ipc_schedule (void *ctx, int fd, const char *mcontent, uint32_t mlen);

/* Not in the original: opt-in backpressure. Once set, ipc_schedule returns
 * IPC_EQUEUEFULL (nothing queued) while `bytes` or more wait to be written to
 * that connection; MESSAGE_TX events say when to try again. 0 removes the
 * limit (the default). Returns 0, or -1. */
int ipc_set_queue_limit (void *ctx, uint32_t bytes);

/* Blocks until one message arrives on the connection (by fd or by index), outside
 * the event loop. *len: capacity in, payload size out. Returns 0; -1 error;
 * -2 the peer closed; IPC_ETOOSMALL (message kept, *len = size needed). */
int ipc_read_fd (void *ctx, int fd, char *buffer, size_t *len);
int ipc_read (void *ctx, size_t index, char *buffer, size_t *len);

/* Waits for the next event. *type receives an enum event_types value, *index the
 * connection's id and *originfd its fd (0 for TIMER). For MESSAGE_RX the payload
 * is copied into buffer and *len (capacity in) receives its size; for other events
 * *len is set to 0. Returns 0; -1 if the poller failed; IPC_ETOOSMALL if the
 * payload is larger than *len (nothing copied, *len = size needed, *type, *index,
 * *originfd set, and the same event is returned by the next call). */
int ipc_wait_event (void *ctx, char *type, size_t *index, int *originfd,
                    char *buffer, size_t *len);

/* Sets the timer in ms: ipc_wait_event returns TIMER after this long without any
 * event (restarted by every call). Negative: no timer. */
void ipc_context_timer (void *ctx, int timer);

/* Closes a connection (by fd or index): its queue is dropped, a service socket is
 * removed, an external fd is closed. Returns 0, or -1 if unknown. */
int ipc_close_fd (void *ctx, int fd);
int ipc_close (void *ctx, size_t index);

/* Closes every connection. Returns 0. */
int ipc_close_all (void *ctx);

/* Watches a foreign fd: EXTERNAL is reported while it is readable. The context
 * takes ownership (ipc_close closes it). Returns 0, or -1 (invalid or already
 * watched fd). */
int ipc_add_external (void *ctx, int fd);

/* Joins two connections of the context: LibIPC frames read from either are
 * written to the other (fd1 is the untrusted side: its frames are checked against
 * the maximum message size). When one side ends, the other is closed after what
 * was already accepted for it has been written. Returns 0, or -1. */
int ipc_add_switch (void *ctx, int fd1, int fd2);

/* Sets the callbacks that read and write switched `fd` instead of the library
 * (see ipc_switch_cb_in/out above; `in` is called when fd is readable). Both must
 * be non-NULL. Returns 0, or -1 if fd is not switched. */
int ipc_set_switch_callbacks (void *ctx, int fd, ipc_switch_cb_in in, ipc_switch_cb_out out);

#ifdef __cplusplus
}
#endif

#endif /* LIBIPC_H */
