/*
 * pong: sends a message to a service (count times, default once), checks that
 * each answer is the same message byte for byte, and prints it.
 *
 *     pong name message [count]
 *
 * Exits 0 once every answer came back, 1 on a wrong answer, an error, a closed
 * connection, or 5 seconds without any event.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libipc.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s name message [count]\n", argv[0]);
		return 1;
	}
	const char *name = argv[1];
	const char *message = argv[2];
	uint32_t mlen = (uint32_t)strlen(message);
	long count = argc > 3 ? strtol(argv[3], NULL, 10) : 1;

	void *ctx = NULL;
	if (ipc_context_init(&ctx) != 0) {
		fprintf(stderr, "pong: cannot init context\n");
		return 1;
	}

	int servicefd = 0;
	if (ipc_connect_service(ctx, &servicefd, name, (uint16_t)strlen(name)) != 0) {
		fprintf(stderr, "pong: cannot connect to %s\n", name);
		return 1;
	}

	ipc_context_timer(ctx, 5000); /* TIMER after 5 s without any event */

	/* Room for the message and one byte more: a longer answer is wrong anyway,
	 * and ipc_wait_event reports it as IPC_ETOOSMALL. */
	char *buffer = malloc(mlen + 1);
	if (buffer == NULL)
		return 1;
	long sent = 0, received = 0;
	while (received < count) {
		/* Queue what the service accepts; on IPC_EQUEUEFULL, retry later. */
		while (sent < count) {
			int ret = ipc_schedule(ctx, servicefd, message, mlen);
			if (ret == IPC_EQUEUEFULL)
				break;
			if (ret != 0) {
				fprintf(stderr, "pong: ipc_schedule failed (%d)\n", ret);
				return 1;
			}
			sent++;
		}

		char type;
		size_t index = 0;
		int fd = 0;
		size_t len = mlen + 1;
		int ret = ipc_wait_event(ctx, &type, &index, &fd, buffer, &len);
		if (ret != 0) {
			fprintf(stderr, "pong: ipc_wait_event failed (%d, len %zu)\n", ret, len);
			return 1;
		}

		switch ((enum event_types)type) {
		case MESSAGE_RX:
			if (len != mlen || memcmp(buffer, message, mlen) != 0) {
				fprintf(stderr, "pong: answer %ld differs: %zu bytes \"%.*s\"\n",
				        received + 1, len, (int)len, buffer);
				return 1;
			}
			printf("%.*s\n", (int)len, buffer);
			received++;
			break;
		case MESSAGE_TX:
			break;
		case DISCONNECTION:
			fprintf(stderr, "pong: %s closed the connection\n", name);
			return 1;
		case TIMER:
			fprintf(stderr, "pong: no answer from %s within 5 s (%ld of %ld)\n",
			        name, received, count);
			return 1;
		default:
			fprintf(stderr, "pong: unexpected event %d\n", type);
			return 1;
		}
	}

	free(buffer);
	ipc_context_deinit(&ctx);
	return 0;
}
