/* Tiny AF_VSOCK test client, run inside a guest (busybox has no vsock client).
 *   vsock-client <cid> <port> <frame-hex> [hold|quit]
 * Connects, writes the frame bytes, reads one answer frame (4-byte big-endian length +
 * body) and prints it as one hex line. "hold" (default): then waits (up to 120 s) for the
 * agent to close the connection and prints "eof". "quit": closes the connection itself.
 * Exit 0 on success, 1 on any error (message on stderr).
 * Build: musl-gcc -static -O2 -o vsock-client vsock-client.c */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../src/vsock.h"

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

static int die(const char *what)
{
	fprintf(stderr, "vsock-client: %s: %s\n", what, strerror(errno));
	return 1;
}

static int read_full(int fd, uint8_t *p, size_t n)
{
	while (n) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, 60000) <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		ssize_t r = read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = ECONNRESET;
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 4 && argc != 5) {
		fprintf(stderr, "usage: vsock-client <cid> <port> <frame-hex> [hold|quit]\n");
		return 2;
	}
	size_t hl = strlen(argv[3]);
	if (hl % 2 || hl == 0) {
		fprintf(stderr, "vsock-client: frame hex has odd length\n");
		return 2;
	}
	uint8_t *frame = malloc(hl / 2);
	if (!frame)
		return die("malloc");
	for (size_t i = 0; i < hl / 2; i++) {
		unsigned v;
		if (sscanf(argv[3] + 2 * i, "%2x", &v) != 1) {
			fprintf(stderr, "vsock-client: bad hex\n");
			return 2;
		}
		frame[i] = (uint8_t)v;
	}
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return die("socket(AF_VSOCK)");
	struct sm_sockaddr_vm a;
	memset(&a, 0, sizeof(a));
	a.svm_family = AF_VSOCK;
	a.svm_cid = (unsigned)strtoul(argv[1], NULL, 0);
	a.svm_port = (unsigned)strtoul(argv[2], NULL, 0);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		return die("connect");
	for (size_t off = 0; off < hl / 2;) {
		ssize_t w = write(fd, frame + off, hl / 2 - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return die("write");
		off += (size_t)w;
	}
	uint8_t hdr[4];
	if (read_full(fd, hdr, 4) < 0)
		return die("read length");
	uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (n == 0 || n > 65536) {
		fprintf(stderr, "vsock-client: implausible answer length %u\n", n);
		return 1;
	}
	uint8_t *body = malloc(n);
	if (!body || read_full(fd, body, n) < 0)
		return die("read body");
	printf("%02x%02x%02x%02x", hdr[0], hdr[1], hdr[2], hdr[3]);
	for (uint32_t i = 0; i < n; i++)
		printf("%02x", body[i]);
	printf("\n");
	fflush(stdout);
	if (argc == 5 && !strcmp(argv[4], "quit"))
		return close(fd) < 0 ? die("close") : 0;
	/* the agent closes this connection when another transport starts a session */
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	for (;;) {
		if (poll(&pfd, 1, 120000) <= 0) {
			fprintf(stderr, "vsock-client: no eof within 120 s\n");
			return 1;
		}
		uint8_t junk[4096];
		ssize_t r = read(fd, junk, sizeof(junk));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
	}
	printf("eof\n");
	return 0;
}
