/* vsock as an alternative agent transport (SPEC 1 allows any reliable byte stream).
 *
 * When socket(AF_VSOCK, SOCK_STREAM) works, the agent also listens on vsock port
 * SM_VSOCK_PORT. Every transport that does not carry the current session - accepted
 * vsock connections, and the virtio-serial port while a vsock connection holds the
 * session - is scanned here for a complete host hello (SPEC 4.4 marker + full decode).
 * The first stream on which one arrives becomes the transport: agent.c resets the old
 * session (SPEC 4.2) and hands the old transport back with vsock_standby(). When a vsock
 * transport ends, vsock_lost() returns the virtio-serial port and the agent goes back to
 * scanning both. */
#ifndef SM_VSOCK_H
#define SM_VSOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SM_VSOCK_PORT 1024u

/* struct sockaddr_vm of <linux/vm_sockets.h> (musl ships no kernel headers) */
struct sm_sockaddr_vm {
	unsigned short svm_family;
	unsigned short svm_reserved1;
	unsigned int svm_port;
	unsigned int svm_cid;
	unsigned char svm_flags;
	unsigned char svm_zero[3];
};
#define SM_VSOCK_PENDING_MAX 4          /* accepted vsock connections waiting for a hello */
#define SM_VSOCK_SCAN_BYTES (64u * 1024) /* hello scan buffer per waiting stream */

struct vs_switch {
	int fd;       /* the new transport */
	uint8_t *buf; /* malloc'd, owned by the caller: bytes from the hello frame on */
	size_t len, cap;
};

/* Start listening. virtio_fd = the virtio-serial port (the default transport).
 * Returns an fd to watch for EPOLLIN (level-triggered), or -1 without AF_VSOCK. */
int vsock_init(int virtio_fd);

/* Call when the fd from vsock_init is readable. Returns true (once per hello) when a
 * stream has delivered a complete host hello: *sw describes the new transport. */
bool vsock_event(struct vs_switch *sw);

/* The previous transport after a switch: the virtio-serial port goes back to the hello
 * scan, a vsock connection is closed (its session has ended). */
void vsock_standby(int fd);

/* The transport fd ended (EOF/error). A vsock connection is closed and the virtio-serial
 * port is returned (taken out of the scan); any other fd is returned unchanged. */
int vsock_lost(int fd);

#endif
