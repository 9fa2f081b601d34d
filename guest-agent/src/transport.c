/* The transport: the virtio-serial port (find, open, connect/disconnect probing), reading and
 * writing the byte stream, the vsock takeover (vsock.h). */
#include "agent_int.h"
#include "vsock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Write queued frames now rather than at the end of the event-loop turn. */
void flush_now(struct agent *ag)
{
	if (ag->connected && outq_pending(ag) > 0)
		port_write(ag);
}

void flush_blocking(struct agent *ag, int timeout_ms)
{
	int64_t end = mono_ms() + timeout_ms;
	while (outq_pending(ag) > 0 && ag->connected && mono_ms() < end) {
		ssize_t n = write(ag->port, ag->outq.p + ag->out_off, outq_pending(ag));
		if (n > 0) {
			ag->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			break;
		struct pollfd pfd = {.fd = ag->port, .events = POLLOUT};
		poll(&pfd, 1, 50);
	}
}

void port_disconnected(struct agent *ag)
{
	if (ag->connected)
		sm_log("host disconnected");
	ag->connected = false;
	watch_set(ag, &ag->port_w, 0);
	ag->port = ag->port_w.fd = vsock_lost(ag->port); /* a vsock transport ended: back to virtio-serial */
	if (ag->session)
		session_reset(ag);
	ag->session = false;
	outq_drop(ag);
	ag->in_len = 0;
	ag->next_port_probe = mono_ms() + SM_RECONNECT_POLL_MS;
}

/* vsock.c saw a complete host hello on a transport other than ours: that stream becomes
 * the transport (the old session ends, SPEC 4.2) and the old one goes back to its scan. */

void transport_take(struct agent *ag)
{
	struct vs_switch sw;
	while (vsock_event(&sw)) {
		if (ag->session)
			session_reset(ag);
		ag->session = false;
		outq_drop(ag);
		watch_set(ag, &ag->port_w, 0);
		vsock_standby(ag->port);
		ag->port = ag->port_w.fd = sw.fd;
		ag->connected = true;
		free(ag->in);
		ag->in = sw.buf;
		ag->in_len = sw.len;
		ag->in_cap = sw.cap;
		size_t used = process_input(ag);
		memmove(ag->in, ag->in + used, ag->in_len - used);
		ag->in_len -= used;
	}
}

void port_probe(struct agent *ag)
{
	struct pollfd pfd = {.fd = ag->port, .events = POLLIN};
	if (poll(&pfd, 1, 0) >= 0 && !(pfd.revents & POLLHUP)) {
		sm_dbg("transport: host connected");
		ag->connected = true;
		ag->in_len = 0;
	} else {
		ag->next_port_probe = mono_ms() + SM_RECONNECT_POLL_MS;
	}
}

void port_read(struct agent *ag)
{
	for (int iter = 0; iter < 16; iter++) {
		size_t want = 65536;
		if (ag->session && ag->in_len >= 4) {
			uint32_t n = (uint32_t)ag->in[0] << 24 | (uint32_t)ag->in[1] << 16 | (uint32_t)ag->in[2] << 8 | ag->in[3];
			if (n >= 1 && n <= SM_MAX_FRAME_BYTES && ag->in_len < 4 + (size_t)n)
				want = 4 + (size_t)n - ag->in_len;
		}
		if (want < 65536)
			want = 65536;
		if (ag->in_len + want > ag->in_cap) {
			size_t nc = ag->in_len + want;
			if (nc > SM_MAX_FRAME_BYTES + 65536 + 4)
				nc = SM_MAX_FRAME_BYTES + 65536 + 4;
			if (nc > ag->in_cap) {
				uint8_t *np = realloc(ag->in, nc);
				if (!np)
					return;
				ag->in = np;
				ag->in_cap = nc;
			}
		}
		if (ag->in_cap == ag->in_len)
			return;
		ssize_t n = read(ag->port, ag->in + ag->in_len, ag->in_cap - ag->in_len);
		if (n == 0) {
			port_disconnected(ag);
			return;
		}
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				port_disconnected(ag);
			return;
		}
		ag->in_len += (size_t)n;
		size_t used = process_input(ag);
		if (used > 0) {
			memmove(ag->in, ag->in + used, ag->in_len - used);
			ag->in_len -= used;
		}
		if (!ag->session && ag->in_len > SM_MAX_FRAME_BYTES + 4) {
			/* scanning never needs more than one frame */
			size_t drop = ag->in_len - (SM_MAX_FRAME_BYTES + 4);
			memmove(ag->in, ag->in + drop, ag->in_len - drop);
			ag->in_len -= drop;
		}
		if (ag->in_len == 0 && ag->in_cap > 256 * 1024) {
			free(ag->in);
			ag->in = NULL;
			ag->in_cap = 0;
		}
		if (outq_pending(ag) > SM_OUTQ_HARD_BYTES || !ag->connected)
			return;
	}
}

void port_write(struct agent *ag)
{
	while (outq_pending(ag) > 0) {
		ssize_t n = write(ag->port, ag->outq.p + ag->out_off, outq_pending(ag));
		if (n > 0) {
			ag->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		port_disconnected(ag);
		return;
	}
	if (ag->out_off == ag->outq.len) {
		ag->outq.len = ag->out_off = 0;
		if (ag->outq.cap > 1024 * 1024)
			cbe_free(&ag->outq);
	} else if (ag->out_off > 1024 * 1024) {
		memmove(ag->outq.p, ag->outq.p + ag->out_off, ag->outq.len - ag->out_off);
		ag->outq.len -= ag->out_off;
		ag->out_off = 0;
	}
}

static int find_port(char *path, size_t cap)
{
	DIR *dir = opendir("/sys/class/virtio-ports");
	if (!dir)
		return -ENOENT;
	struct dirent *de;
	int r = -ENOENT;
	while ((de = readdir(dir))) {
		if (de->d_name[0] == '.')
			continue;
		char p[300], name[64];
		snprintf(p, sizeof(p), "/sys/class/virtio-ports/%s/name", de->d_name);
		if (sm_read_text(p, name, sizeof(name)) <= 0)
			continue;
		name[strcspn(name, "\n")] = 0;
		if (!strcmp(name, "agent")) {
			snprintf(path, cap, "/dev/%.48s", de->d_name);
			r = 0;
			break;
		}
	}
	closedir(dir);
	return r;
}

int open_port(struct agent *ag)
{
	int64_t end = mono_ms() + 10000;
	struct timespec ts = {0, 5 * 1000 * 1000};
	while (find_port(ag->port_path, sizeof(ag->port_path)) < 0 || access(ag->port_path, F_OK) < 0) {
		if (mono_ms() > end) {
			sm_log("no virtio-serial port named 'agent' found");
			return -ENOENT;
		}
		nanosleep(&ts, NULL);
	}
	ag->port = open(ag->port_path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (ag->port < 0) {
		sm_log("open %s: %s", ag->port_path, strerror(errno));
		return -errno;
	}
	/* SIGIO on host (dis)connect and data: a prompt wakeup when reconnecting */
	fcntl(ag->port, F_SETOWN, getpid());
	fcntl(ag->port, F_SETFL, fcntl(ag->port, F_GETFL) | O_ASYNC);
	sm_dbg("transport: %s", ag->port_path);
	ag->port_w.kind = W_PORT;
	ag->port_w.fd = ag->port;
	ag->connected = false;
	ag->next_port_probe = mono_ms();
	return 0;
}
