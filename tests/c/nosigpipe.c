/*
 * nosigpipe: writing to a peer that is gone fails with an error, and does not
 * kill the program with SIGPIPE. SIGPIPE is deliberately left at its default
 * action (terminate) here: the library must avoid it by itself.
 *
 *     nosigpipe
 *
 * Tries a descriptor of its own (a socketpair) and a connection of the context
 * (to a service, in $RUNDIR, that closes before accepting it). Exits 0 if every
 * ipc_write returned a negative value and the program survived.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libipc.h>

int main(void)
{
	struct sigaction sa;
	if (sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL) {
		fprintf(stderr, "nosigpipe: SIGPIPE should be at its default action\n");
		return 1;
	}

	void *ctx = NULL;
	if (ipc_context_init(&ctx) != 0) {
		fprintf(stderr, "nosigpipe: cannot init context\n");
		return 1;
	}

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		perror("socketpair");
		return 1;
	}
	close(sv[1]); /* the peer is gone */

	int ret = ipc_write(ctx, sv[0], "x", 1);
	printf("ipc_write to a closed peer: %d\n", ret);
	if (ret >= 0) {
		fprintf(stderr, "nosigpipe: ipc_write should have failed\n");
		return 1;
	}

	ret = ipc_schedule(ctx, sv[0], "x", 1);
	printf("ipc_schedule to an fd unknown to the context: %d\n", ret);
	if (ret != -1) {
		fprintf(stderr, "nosigpipe: ipc_schedule should have returned -1\n");
		return 1;
	}

	close(sv[0]);

	/* A connection of the context, to a service that is gone. */
	int servicefd = 0, clientfd = 0;
	if (ipc_service_init(ctx, &servicefd, "nosigpipe", 9) != 0 ||
	    ipc_connect_service(ctx, &clientfd, "nosigpipe", 9) != 0) {
		fprintf(stderr, "nosigpipe: cannot set up the service\n");
		return 1;
	}
	ipc_close_fd(ctx, servicefd); /* before accepting: the client is cut off */
	ret = ipc_write(ctx, clientfd, "x", 1);
	printf("ipc_write to a connection whose service is gone: %d\n", ret);
	if (ret >= 0) {
		fprintf(stderr, "nosigpipe: ipc_write should have failed\n");
		return 1;
	}

	ipc_context_deinit(&ctx);
	printf("nosigpipe: ok, still alive\n");
	return 0;
}
