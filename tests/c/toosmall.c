/*
 * toosmall: a message larger than the caller's buffer is never truncated.
 *
 *     toosmall name
 *
 * Connects to echo service `name` and, for ipc_wait_event and ipc_read_fd,
 * sends a message, receives it into a buffer that is too small (IPC_ETOOSMALL,
 * *len = the size needed, nothing lost), then into one large enough (the whole
 * message, intact). Also round-trips a message of the maximum size, 1 MiB.
 * Exits 0 if all went as expected.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libipc.h>

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "toosmall: line %d: failed: %s\n",     \
			        __LINE__, #cond);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)

static void fill(char *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)((i * 31 + seed) % 251);
}

/* Waits for the next event other than MESSAGE_TX, with a buffer of `cap` bytes. */
static int next_event(void *ctx, char *type, int *fd, char *buf, size_t cap, size_t *len)
{
	for (;;) {
		size_t index = 0;
		*len = cap;
		int ret = ipc_wait_event(ctx, type, &index, fd, buf, len);
		if (ret != 0 || *type != MESSAGE_TX)
			return ret;
	}
}

/* Echo of `size` bytes through the event loop: first too small, then right. */
static void through_wait_event(void *ctx, int servicefd, size_t size, unsigned seed)
{
	char *sent = malloc(size), *got = malloc(size);
	char small[100];
	char type;
	int fd;
	size_t len;
	CHECK(sent != NULL && got != NULL);
	fill(sent, size, seed);
	CHECK(ipc_schedule(ctx, servicefd, sent, (uint32_t)size) == 0);

	int ret = next_event(ctx, &type, &fd, small, sizeof small, &len);
	CHECK(ret == IPC_ETOOSMALL);
	CHECK(type == MESSAGE_RX);
	CHECK(fd == servicefd);
	CHECK(len == size);

	/* Asking again, too small still: the same answer. */
	ret = next_event(ctx, &type, &fd, small, sizeof small, &len);
	CHECK(ret == IPC_ETOOSMALL && type == MESSAGE_RX && len == size);

	ret = next_event(ctx, &type, &fd, got, size, &len);
	CHECK(ret == 0);
	CHECK(type == MESSAGE_RX);
	CHECK(fd == servicefd);
	CHECK(len == size);
	CHECK(memcmp(sent, got, size) == 0);
	printf("ipc_wait_event: %zu bytes: IPC_ETOOSMALL with a 100-byte buffer, then intact\n", size);
	free(sent);
	free(got);
}

/* The same with ipc_write and ipc_read_fd, outside the event loop. */
static void through_read_fd(void *ctx, int servicefd, size_t size, unsigned seed)
{
	char *sent = malloc(size), *got = malloc(size);
	char small[100];
	size_t len;
	CHECK(sent != NULL && got != NULL);
	fill(sent, size, seed);
	CHECK(ipc_write(ctx, servicefd, sent, (uint32_t)size) == 0);

	len = sizeof small;
	CHECK(ipc_read_fd(ctx, servicefd, small, &len) == IPC_ETOOSMALL);
	CHECK(len == size);

	len = size;
	CHECK(ipc_read_fd(ctx, servicefd, got, &len) == 0);
	CHECK(len == size);
	CHECK(memcmp(sent, got, size) == 0);
	printf("ipc_read_fd: %zu bytes: IPC_ETOOSMALL with a 100-byte buffer, then intact\n", size);
	free(sent);
	free(got);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s name\n", argv[0]);
		return 1;
	}
	void *ctx = NULL;
	int servicefd = 0;
	CHECK(ipc_context_init(&ctx) == 0);
	CHECK(ipc_connect_service(ctx, &servicefd, argv[1], (uint16_t)strlen(argv[1])) == 0);
	ipc_context_timer(ctx, 5000); /* never wait forever for the echo */

	through_wait_event(ctx, servicefd, 5000, 1);
	through_read_fd(ctx, servicefd, 5000, 2);
	through_wait_event(ctx, servicefd, 1 << 20, 3);
	through_read_fd(ctx, servicefd, 1 << 20, 4);

	ipc_context_deinit(&ctx);
	printf("toosmall: ok\n");
	return 0;
}
