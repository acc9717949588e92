/*
 * burst: a client written for the original LibIPC. It schedules a burst of
 * messages at once (45, of 0 B to 300 KB), then waits for the service to echo
 * each, in order and byte for byte.
 *
 *     burst name [queue-limit]
 *
 * The original's ipc_schedule queues whatever it is given: a program like this
 * one never checks for a full queue. With a queue-limit (bytes), it opts in to
 * backpressure (ipc_set_queue_limit, not in the original): then it schedules
 * what the queue takes, and the rest after MESSAGE_TX events.
 *
 * Prints "echoed N messages, N bytes; queue full K times". Exits 1 on a
 * refused schedule without a limit, a wrong echo, a closed connection, or 5 s
 * without any event.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libipc.h>

#define COUNT 45
#define LARGEST (300 * 1000)

static uint32_t size_of(int i)
{
	return (uint32_t)((long)LARGEST * i / (COUNT - 1));
}

static void fill(char *buf, int i, uint32_t len)
{
	for (uint32_t j = 0; j < len; j++)
		buf[j] = (char)((i * 7 + j) % 251);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s name [queue-limit]\n", argv[0]);
		return 1;
	}
	const char *name = argv[1];
	long limit = argc > 2 ? strtol(argv[2], NULL, 10) : 0;

	void *ctx = NULL;
	if (ipc_context_init(&ctx) != 0)
		return 1;
	if (limit > 0 && ipc_set_queue_limit(ctx, (uint32_t)limit) != 0) {
		fprintf(stderr, "burst: ipc_set_queue_limit failed\n");
		return 1;
	}
	int fd = 0;
	if (ipc_connect_service(ctx, &fd, name, (uint16_t)strlen(name)) != 0) {
		fprintf(stderr, "burst: cannot connect to %s\n", name);
		return 1;
	}
	ipc_context_timer(ctx, 5000);

	char *out = malloc(LARGEST);
	char *want = malloc(LARGEST);
	char *in = malloc(LARGEST + 1);
	if (out == NULL || want == NULL || in == NULL)
		return 1;

	int sent = 0, received = 0, full = 0;
	long bytes = 0;
	while (received < COUNT) {
		while (sent < COUNT) {
			uint32_t len = size_of(sent);
			fill(out, sent, len);
			int ret = ipc_schedule(ctx, fd, out, len);
			if (ret == IPC_EQUEUEFULL && limit > 0) {
				full++;
				break;
			}
			if (ret != 0) {
				fprintf(stderr, "burst: ipc_schedule refused message %d of %d (%d)\n",
				        sent + 1, COUNT, ret);
				return 1;
			}
			sent++;
		}

		char type;
		size_t index = 0;
		int origin = 0;
		size_t len = LARGEST + 1;
		int ret = ipc_wait_event(ctx, &type, &index, &origin, in, &len);
		if (ret != 0) {
			fprintf(stderr, "burst: ipc_wait_event failed (%d)\n", ret);
			return 1;
		}
		switch ((enum event_types)type) {
		case MESSAGE_RX:
			fill(want, received, size_of(received));
			if (len != size_of(received) || memcmp(in, want, len) != 0) {
				fprintf(stderr, "burst: echo %d differs (%zu bytes, want %u)\n",
				        received + 1, len, size_of(received));
				return 1;
			}
			bytes += (long)len;
			received++;
			break;
		case MESSAGE_TX:
			break;
		case DISCONNECTION:
			fprintf(stderr, "burst: %s closed the connection after %d echoes\n",
			        name, received);
			return 1;
		case TIMER:
			fprintf(stderr, "burst: nothing for 5 s (%d sent, %d echoed)\n", sent,
			        received);
			return 1;
		default:
			fprintf(stderr, "burst: unexpected event %d\n", type);
			return 1;
		}
	}
	printf("echoed %d messages, %ld bytes; queue full %d times\n", received, bytes, full);
	free(out);
	free(want);
	free(in);
	ipc_context_deinit(&ctx);
	return 0;
}
