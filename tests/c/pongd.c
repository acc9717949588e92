/*
 * pongd: a LibIPC echo service. Every message a client sends comes back to it.
 *
 *     pongd [name] [max_clients] [workers]
 *
 * Listens on $RUNDIR/name (default name: pong). If max_clients > 0, exits 0
 * after that many clients have gone (DISCONNECTION events). With workers > 1
 * (default 1), that many threads each run a context serving the same name
 * (ipc_service_share, not in the original): a client lives on one of them.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libipc.h>

#define BUFSIZE ((1 << 20) + 1024) /* the largest message (1 MiB) and a margin */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long max_clients = 0;
static long gone = 0;
static int workers = 1;

struct worker {
	void *ctx;
	int n;
	int failed;
};

/* Counts a client gone; true once max_clients have. */
static int count_gone(long more)
{
	pthread_mutex_lock(&lock);
	gone += more;
	int done = max_clients > 0 && gone >= max_clients;
	pthread_mutex_unlock(&lock);
	return done;
}

/* One line of output, whole, whichever thread prints it. */
#define say(...)                                      \
	do {                                              \
		pthread_mutex_lock(&lock);                    \
		if (workers > 1)                              \
			printf("pongd: worker %d: ", w->n);       \
		else                                          \
			printf("pongd: ");                        \
		printf(__VA_ARGS__);                          \
		fflush(stdout);                               \
		pthread_mutex_unlock(&lock);                  \
	} while (0)

static void *serve(void *arg)
{
	struct worker *w = arg;
	size_t bufsize = BUFSIZE;
	char *buffer = malloc(bufsize);
	if (buffer == NULL) {
		w->failed = 1;
		return NULL;
	}
	/* Other workers count clients too: look at the total now and then. */
	if (workers > 1 && max_clients > 0)
		ipc_context_timer(w->ctx, 50);

	while (!count_gone(0)) {
		char type;
		size_t index = 0;
		int fd = 0;
		size_t len = bufsize; /* capacity in, payload size out */

		int ret = ipc_wait_event(w->ctx, &type, &index, &fd, buffer, &len);
		if (ret == IPC_ETOOSMALL) {
			/* The message is kept: grow the buffer to *len and ask again. */
			char *bigger = realloc(buffer, len);
			if (bigger == NULL)
				break;
			buffer = bigger;
			bufsize = len;
			continue;
		}
		if (ret != 0) {
			fprintf(stderr, "pongd: ipc_wait_event failed (%d)\n", ret);
			w->failed = 1;
			break;
		}

		switch ((enum event_types)type) {
		case CONNECTION:
			say("client %zu connected (fd %d)\n", index, fd);
			break;
		case DISCONNECTION:
			say("client %zu disconnected\n", index);
			count_gone(1);
			break;
		case MESSAGE_RX:
			ret = ipc_schedule(w->ctx, fd, buffer, (uint32_t)len);
			if (ret == IPC_EQUEUEFULL) {
				/* Only with ipc_set_queue_limit (not called here, as
				 * in the original): the client does not read. */
				say("client %zu does not read, closing\n", index);
				ipc_close_fd(w->ctx, fd);
				count_gone(1);
			} else if (ret != 0) {
				fprintf(stderr, "pongd: ipc_schedule failed (%d)\n", ret);
				w->failed = 1;
			}
			break;
		case MESSAGE_TX:
		case TIMER:
			break;
		case ERROR:
			fprintf(stderr, "pongd: error event (fd %d)\n", fd);
			break;
		default:
			say("event %d\n", type);
			break;
		}
		if (w->failed)
			break;
	}
	free(buffer);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "pong";
	max_clients = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
	workers = argc > 3 ? atoi(argv[3]) : 1;
	if (workers < 1 || workers > 64) {
		fprintf(stderr, "pongd: workers must be 1 to 64\n");
		return 1;
	}

	struct worker w[64];
	for (int i = 0; i < workers; i++) {
		w[i].ctx = NULL;
		w[i].n = i;
		w[i].failed = 0;
		if (ipc_context_init(&w[i].ctx) != 0) {
			fprintf(stderr, "pongd: cannot init context\n");
			return 1;
		}
	}
	int servicefd = 0;
	if (ipc_service_init(w[0].ctx, &servicefd, name, (uint16_t)strlen(name)) != 0) {
		fprintf(stderr, "pongd: cannot create service %s\n", name);
		return 1;
	}
	/* Before any thread starts: ipc_service_share reads w[0]'s context. */
	for (int i = 1; i < workers; i++) {
		int fd = 0;
		if (ipc_service_share(w[i].ctx, w[0].ctx, servicefd, &fd) != 0) {
			fprintf(stderr, "pongd: cannot share service %s\n", name);
			return 1;
		}
	}
	printf("pongd: service %s ready (fd %d)\n", name, servicefd);
	fflush(stdout);

	pthread_t threads[64];
	for (int i = 1; i < workers; i++) {
		if (pthread_create(&threads[i], NULL, serve, &w[i]) != 0) {
			fprintf(stderr, "pongd: cannot start worker %d\n", i);
			return 1;
		}
	}
	serve(&w[0]);
	int failed = w[0].failed;
	for (int i = 1; i < workers; i++) {
		pthread_join(threads[i], NULL);
		failed |= w[i].failed;
	}

	printf("pongd: %ld clients served, bye\n", gone);
	for (int i = 0; i < workers; i++)
		ipc_context_deinit(&w[i].ctx);
	return failed;
}
