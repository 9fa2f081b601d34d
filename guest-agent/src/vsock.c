/* vsock listener + hello scan of the transports that do not hold the session.
 * See vsock.h for the model; agent.c keeps owning the active transport. */
#include "vsock.h"

#include "proto.h"
#include "sm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define SM_VMADDR_CID_ANY 0xffffffffu
#define SM_VMADDR_CID_HOST 2u

#define NSLOTS (SM_VSOCK_PENDING_MAX + 1) /* + the virtio-serial port in standby */
#define LISTENER_TAG 0xffffffffu

struct vs_stream {
	int fd; /* -1 = free slot */
	bool virtio;
	uint64_t seq; /* accept order: the oldest waiting connection is dropped first */
	uint8_t *buf;
	size_t len;
};

static struct {
	int ep, lfd, virtio_fd;
	bool allow_local; /* kernel command line sm.vsock_local: accept peers other than the host */
	uint64_t seq;
	struct vs_stream s[NSLOTS];
} V = {.ep = -1, .lfd = -1, .virtio_fd = -1};

static void slot_free(struct vs_stream *s, bool close_fd)
{
	if (s->fd < 0)
		return;
	epoll_ctl(V.ep, EPOLL_CTL_DEL, s->fd, NULL);
	if (close_fd)
		close(s->fd);
	free(s->buf);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}

static struct vs_stream *slot_add(int fd, bool virtio)
{
	struct vs_stream *s = NULL, *oldest = NULL;
	for (int i = 0; i < NSLOTS; i++) {
		struct vs_stream *c = &V.s[i];
		if (c->fd < 0) {
			if (!s)
				s = c;
		} else if (!c->virtio && (!oldest || c->seq < oldest->seq)) {
			oldest = c;
		}
	}
	if (!s) {
		/* full (only vsock connections can fill it): drop the oldest silent one */
		sm_log("vsock: too many connections without a hello; dropping the oldest");
		slot_free(oldest, true);
		s = oldest;
	}
	s->buf = malloc(SM_VSOCK_SCAN_BYTES);
	if (!s->buf) {
		sm_log("vsock: out of memory for a hello scan buffer");
		return NULL;
	}
	/* level-triggered for sockets; edge-triggered for the virtio port, which reports
	 * POLLHUP for as long as the host is not connected */
	struct epoll_event ev = {.events = EPOLLIN | (virtio ? EPOLLET : 0u), .data.u32 = (uint32_t)(s - V.s)};
	if (epoll_ctl(V.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		sm_log("vsock: epoll_ctl: %s", strerror(errno));
		free(s->buf);
		s->buf = NULL;
		return NULL;
	}
	s->fd = fd;
	s->virtio = virtio;
	s->seq = ++V.seq;
	s->len = 0;
	return s;
}

static bool hello_candidate(const uint8_t *p, uint32_t *n)
{
	static const uint8_t marker[8] = {0x61, 0x74, 0x65, 0x68, 0x65, 0x6c, 0x6c, 0x6f}; /* "t","hello" */
	*n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	/* a host hello is a few dozen bytes: larger claims are not taken seriously here */
	return *n >= 1 && *n <= SM_VSOCK_SCAN_BYTES - 4 && p[4] >= 0xa1 && p[4] <= 0xb7 &&
	       memcmp(p + 5, marker, sizeof(marker)) == 0;
}

static bool is_host_hello(const uint8_t *body, uint32_t n)
{
	_cleanup_free_ struct cb_item *items = malloc((size_t)n * sizeof(*items));
	if (!items)
		return false;
	struct cb_doc d;
	struct frame_info fi;
	struct sm_err e;
	return proto_check_frame(&d, body, n, items, n, SM_MAX_FRAME_BYTES, &fi, &e) == 0 && fi.kind == FK_HELLO;
}

/* SPEC 4.4 scan over s->buf. Returns true with the hello at the start of the buffer;
 * otherwise keeps only bytes that may still become a hello. */
static bool scan(struct vs_stream *s)
{
	size_t off = 0;
	bool hit = false;
	while (s->len - off >= 13) {
		const uint8_t *p = s->buf + off;
		size_t avail = s->len - off;
		uint32_t n;
		if (!hello_candidate(p, &n)) {
			off++;
			continue;
		}
		if (avail < 4 + (size_t)n) {
			/* a stale candidate may claim bytes that never come: a later complete one wins */
			bool later = false;
			for (size_t q = 1; q + 13 <= avail && !later; q++) {
				uint32_t m;
				later = hello_candidate(p + q, &m) && avail - q >= 4 + (size_t)m;
			}
			if (!later)
				break;
			off++;
			continue;
		}
		if (is_host_hello(p + 4, n)) {
			hit = true;
			break;
		}
		off++;
	}
	if (off) {
		memmove(s->buf, s->buf + off, s->len - off);
		s->len -= off;
	}
	return hit;
}

/* Read what is there; true when a complete hello is at the buffer start. */
static bool stream_read(struct vs_stream *s)
{
	for (;;) {
		if (s->len == SM_VSOCK_SCAN_BYTES) {
			/* cannot happen after scan() (a kept candidate always fits); stay safe */
			memmove(s->buf, s->buf + 1, --s->len);
		}
		ssize_t n = read(s->fd, s->buf + s->len, SM_VSOCK_SCAN_BYTES - s->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return false;
		if (n <= 0) {
			if (s->virtio) {
				/* host side not connected: wait (edge-triggered) for it to come back */
				s->len = 0;
				return false;
			}
			sm_dbg("vsock: connection closed before a hello");
			slot_free(s, true);
			return false;
		}
		s->len += (size_t)n;
		if (scan(s))
			return true;
	}
}

static void accept_all(void)
{
	for (;;) {
		struct sm_sockaddr_vm peer;
		socklen_t plen = sizeof(peer);
		memset(&peer, 0, sizeof(peer));
		int fd = accept4(V.lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				sm_log("vsock: accept: %s", strerror(errno));
			return;
		}
		/* Only the host (CID 2) may drive the agent: a loopback peer is a process inside
		 * the guest, which must not gain the agent's (root) powers. */
		if (peer.svm_cid != SM_VMADDR_CID_HOST && !V.allow_local) {
			sm_log("vsock: refused a connection from CID %u (only the host, CID 2, may connect)",
			       peer.svm_cid);
			close(fd);
			continue;
		}
		sm_dbg("vsock: connection from CID %u port %u", peer.svm_cid, peer.svm_port);
		if (!slot_add(fd, false))
			close(fd);
	}
}

static bool cmdline_has(const char *word)
{
	char cmd[4096];
	if (sm_read_text("/proc/cmdline", cmd, sizeof(cmd)) < 0)
		return false;
	size_t wl = strlen(word);
	for (char *p = cmd; (p = strstr(p, word)); p += wl)
		if ((p == cmd || p[-1] == ' ') && (p[wl] == 0 || p[wl] == ' ' || p[wl] == '\n'))
			return true;
	return false;
}

int vsock_init(int virtio_fd)
{
	for (int i = 0; i < NSLOTS; i++)
		V.s[i].fd = -1;
	int lfd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0) {
		sm_dbg("vsock: not available (%s): virtio-serial only", strerror(errno));
		return -1;
	}
	struct sm_sockaddr_vm a;
	memset(&a, 0, sizeof(a));
	a.svm_family = AF_VSOCK;
	a.svm_port = SM_VSOCK_PORT;
	a.svm_cid = SM_VMADDR_CID_ANY;
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 8) < 0) {
		sm_log("vsock: cannot listen on port %u: %s", SM_VSOCK_PORT, strerror(errno));
		close(lfd);
		return -1;
	}
	V.ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = LISTENER_TAG};
	if (V.ep < 0 || epoll_ctl(V.ep, EPOLL_CTL_ADD, lfd, &ev) < 0) {
		sm_log("vsock: epoll: %s", strerror(errno));
		if (V.ep >= 0)
			close(V.ep);
		V.ep = -1;
		close(lfd);
		return -1;
	}
	V.lfd = lfd;
	V.virtio_fd = virtio_fd;
	V.allow_local = cmdline_has("sm.vsock_local");
	sm_dbg("vsock: listening on port %u%s", SM_VSOCK_PORT, V.allow_local ? " (local peers allowed)" : "");
	return V.ep;
}

bool vsock_event(struct vs_switch *sw)
{
	if (V.ep < 0)
		return false;
	/* one event at a time: nothing fetched is left unprocessed when we return a hit */
	for (;;) {
		struct epoll_event ev;
		int n = epoll_wait(V.ep, &ev, 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		if (ev.data.u32 == LISTENER_TAG) {
			accept_all();
			continue;
		}
		if (ev.data.u32 >= NSLOTS)
			continue;
		struct vs_stream *s = &V.s[ev.data.u32];
		if (s->fd < 0 || !stream_read(s))
			continue;
		sm_log("transport: host hello on %s", s->virtio ? "virtio-serial" : "vsock");
		sw->fd = s->fd;
		sw->buf = s->buf;
		sw->len = s->len;
		sw->cap = SM_VSOCK_SCAN_BYTES;
		s->buf = NULL; /* ownership passes to the caller */
		slot_free(s, false);
		return true;
	}
}

void vsock_standby(int fd)
{
	if (V.ep < 0 || fd < 0)
		return;
	if (fd == V.virtio_fd) {
		slot_add(fd, true);
		return;
	}
	close(fd); /* a vsock connection whose session ended */
}

int vsock_lost(int fd)
{
	if (V.ep < 0 || fd == V.virtio_fd)
		return fd;
	sm_log("vsock: host connection closed; back to virtio-serial");
	close(fd);
	for (int i = 0; i < NSLOTS; i++)
		if (V.s[i].fd >= 0 && V.s[i].virtio)
			slot_free(&V.s[i], false);
	return V.virtio_fd;
}
