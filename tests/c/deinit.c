/*
 * deinit: ipc_context_deinit frees the context and nulls the caller's
 * pointer, so that a stale pointer cannot be used again; the service it
 * offered is gone from the run directory.
 *
 *     deinit name
 *
 * Offers service `name` (in $RUNDIR), deinits, and checks that the pointer
 * is NULL, that the socket is removed, and that deiniting the NULL pointer
 * again is harmless. Prints "deinit: ok" and exits 0 if all went as expected.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libipc.h>

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "deinit: line %d: failed: %s\n",       \
			        __LINE__, #cond);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)

int main(int argc, char **argv)
{
	void *ctx = NULL;
	int fd = -1;
	char path[4096];
	const char *rundir = getenv("RUNDIR");

	CHECK(argc == 2 && rundir != NULL);
	snprintf(path, sizeof path, "%s/%s", rundir, argv[1]);
	CHECK(ipc_context_init(&ctx) == 0);
	CHECK(ctx != NULL);
	CHECK(ipc_service_init(ctx, &fd, argv[1], strlen(argv[1])) == 0);
	CHECK(access(path, F_OK) == 0);

	ipc_context_deinit(&ctx);
	CHECK(ctx == NULL);
	CHECK(access(path, F_OK) != 0);
	ipc_context_deinit(&ctx);
	CHECK(ctx == NULL);

	printf("deinit: ok\n");
	return 0;
}
