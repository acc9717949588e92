/*
 * pongd: a LibIPC echo service. Every message a client sends comes back to it.
 *
 *     pongd [name] [max_clients]
 *
 * Listens on $RUNDIR/name (default name: pong). If max_clients > 0, exits 0
 * after that many clients have gone (DISCONNECTION events).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libipc.h>

#define BUFSIZE ((1 << 20) + 1024) /* the largest message (1 MiB) and a margin */

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "pong";
	long max_clients = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
	long gone = 0;

	void *ctx = NULL;
	if (ipc_context_init(&ctx) != 0) {
		fprintf(stderr, "pongd: cannot init context\n");
		return 1;
	}

	int servicefd = 0;
	if (ipc_service_init(ctx, &servicefd, name, (uint16_t)strlen(name)) != 0) {
		fprintf(stderr, "pongd: cannot create service %s\n", name);
		return 1;
	}
	printf("pongd: service %s ready (fd %d)\n", name, servicefd);
	fflush(stdout);

	size_t bufsize = BUFSIZE;
	char *buffer = malloc(bufsize);
	if (buffer == NULL)
		return 1;

	for (;;) {
		char type;
		size_t index = 0;
		int fd = 0;
		size_t len = bufsize; /* capacity in, payload size out */

		int ret = ipc_wait_event(ctx, &type, &index, &fd, buffer, &len);
		if (ret == IPC_ETOOSMALL) {
			/* The message is kept: grow the buffer to *len and ask again. */
			char *bigger = realloc(buffer, len);
			if (bigger == NULL)
				return 1;
			buffer = bigger;
			bufsize = len;
			continue;
		}
		if (ret != 0) {
			fprintf(stderr, "pongd: ipc_wait_event failed (%d)\n", ret);
			return 1;
		}

		switch ((enum event_types)type) {
		case CONNECTION:
			printf("pongd: client %zu connected (fd %d)\n", index, fd);
			break;
		case DISCONNECTION:
			printf("pongd: client %zu disconnected\n", index);
			gone++;
			break;
		case MESSAGE_RX:
			ret = ipc_schedule(ctx, fd, buffer, (uint32_t)len);
			if (ret == IPC_EQUEUEFULL) {
				/* Only with ipc_set_queue_limit (not called here, as
				 * in the original): the client does not read. */
				printf("pongd: client %zu does not read, closing\n", index);
				ipc_close_fd(ctx, fd);
				gone++;
			} else if (ret != 0) {
				fprintf(stderr, "pongd: ipc_schedule failed (%d)\n", ret);
				return 1;
			}
			break;
		case MESSAGE_TX:
			break;
		case ERROR:
			fprintf(stderr, "pongd: error event (fd %d)\n", fd);
			break;
		default:
			printf("pongd: event %d\n", type);
			break;
		}
		fflush(stdout);

		if (max_clients > 0 && gone >= max_clients)
			break;
	}

	printf("pongd: %ld clients served, bye\n", gone);
	free(buffer);
	ipc_context_deinit(&ctx);
	return 0;
}
