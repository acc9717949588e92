/*
 * switch: relays LibIPC frames between a descriptor of our own and a service,
 * with ipc_add_switch, reading and writing our side through callbacks set with
 * ipc_set_switch_callbacks.
 *
 *     switch name
 *
 * One end of a socketpair, sv[0], is switched with a connection to echo service
 * `name`. Frames written into the other end, sv[1], reach the service through
 * the `in` callback; the echoes come back through the `out` callback. Exits 0 if
 * every frame came back intact and in order, and both callbacks were used.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libipc.h>

#define NFRAMES 5

static int in_calls, out_calls;

/* Reads exactly `len` bytes. Returns 1, 0 on EOF before the first byte, -1 on error. */
static int read_all(int fd, char *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = read(fd, buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || (n == 0 && done > 0))
			return -1;
		if (n == 0)
			return 0;
		done += (size_t)n;
	}
	return 1;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* `in` callback: read one whole frame (4-byte big-endian length, payload). */
static enum cb_event_types cb_in(int fd, char *frame, uint32_t *flen)
{
	in_calls++;
	unsigned char *h = (unsigned char *)frame;
	if (*flen < 4)
		return CB_ERROR;
	int r = read_all(fd, frame, 4);
	if (r == 0)
		return CB_FD_CLOSING;
	if (r < 0)
		return CB_ERROR;
	uint32_t plen = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	if (plen > *flen - 4)
		return CB_ERROR;
	if (read_all(fd, frame + 4, plen) != 1)
		return CB_ERROR;
	*flen = 4 + plen;
	return CB_NO_ERROR;
}

/* `out` callback: write the frame we are given, header included. */
static enum cb_event_types cb_out(int fd, const char *frame, uint32_t flen)
{
	out_calls++;
	return write_all(fd, frame, flen) == 0 ? CB_NO_ERROR : CB_ERROR;
}

static void put_frame(int fd, const char *payload)
{
	uint32_t len = (uint32_t)strlen(payload);
	unsigned char h[4] = { (unsigned char)(len >> 24), (unsigned char)(len >> 16),
	                       (unsigned char)(len >> 8), (unsigned char)len };
	if (write_all(fd, (char *)h, 4) != 0 || write_all(fd, payload, len) != 0) {
		perror("switch: write");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	static const char *frames[NFRAMES] = { "one", "two", "", "four, a longer one", "five" };
	if (argc < 2) {
		fprintf(stderr, "usage: %s name\n", argv[0]);
		return 1;
	}

	void *ctx = NULL;
	int servicefd = 0, sv[2];
	if (ipc_context_init(&ctx) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		fprintf(stderr, "switch: setup failed\n");
		return 1;
	}
	if (ipc_add_external(ctx, sv[0]) != 0) {
		fprintf(stderr, "switch: ipc_add_external failed\n");
		return 1;
	}
	if (ipc_connect_service(ctx, &servicefd, argv[1], (uint16_t)strlen(argv[1])) != 0) {
		fprintf(stderr, "switch: cannot connect to %s\n", argv[1]);
		return 1;
	}
	if (ipc_add_switch(ctx, sv[0], servicefd) != 0) {
		fprintf(stderr, "switch: ipc_add_switch failed\n");
		return 1;
	}
	if (ipc_set_switch_callbacks(ctx, sv[0], cb_in, cb_out) != 0) {
		fprintf(stderr, "switch: ipc_set_switch_callbacks failed\n");
		return 1;
	}
	ipc_context_timer(ctx, 5000);

	for (int i = 0; i < NFRAMES; i++)
		put_frame(sv[1], frames[i]);
	fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);

	/* Echoed frames accumulate in `got` until whole. */
	char got[4096], buffer[4096];
	size_t have = 0;
	int echoed = 0;
	for (int events = 0; echoed < NFRAMES; events++) {
		char type;
		size_t index = 0, len = sizeof buffer;
		int fd = 0;
		if (events > 1000) {
			fprintf(stderr, "switch: too many events\n");
			return 1;
		}
		if (ipc_wait_event(ctx, &type, &index, &fd, buffer, &len) != 0) {
			fprintf(stderr, "switch: ipc_wait_event failed\n");
			return 1;
		}
		switch ((enum event_types)type) {
		case SWITCH_RX:
		case SWITCH_TX:
			break;
		case TIMER:
			fprintf(stderr, "switch: timeout, %d of %d frames back\n", echoed, NFRAMES);
			return 1;
		default:
			fprintf(stderr, "switch: unexpected event %d (fd %d)\n", type, fd);
			return 1;
		}

		ssize_t n;
		while ((n = read(sv[1], got + have, sizeof got - have)) > 0)
			have += (size_t)n;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			perror("switch: read");
			return 1;
		}
		while (have >= 4) {
			unsigned char *h = (unsigned char *)got;
			size_t plen = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
			if (have < 4 + plen)
				break;
			const char *want = frames[echoed];
			if (plen != strlen(want) || memcmp(got + 4, want, plen) != 0) {
				fprintf(stderr, "switch: frame %d is \"%.*s\", not \"%s\"\n",
				        echoed, (int)plen, got + 4, want);
				return 1;
			}
			printf("frame %d back: \"%s\"\n", echoed, want);
			echoed++;
			memmove(got, got + 4 + plen, have - 4 - plen);
			have -= 4 + plen;
		}
	}

	printf("callbacks: in %d, out %d\n", in_calls, out_calls);
	if (in_calls == 0 || out_calls == 0) {
		fprintf(stderr, "switch: the callbacks were not used\n");
		return 1;
	}
	close(sv[1]);
	ipc_context_deinit(&ctx);
	printf("switch: ok\n");
	return 0;
}
