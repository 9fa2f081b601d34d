/* Output: frames built into the output queue (res, evt, data, credit, eof/close, fatal), the
 * pending request ids, errno names. */
#include "agent_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void fbegin(struct agent *ag)
{
	ag->fb_start = ag->outq.len;
	cbe_raw(&ag->outq, "\0\0\0\0", 4);
}

bool fend(struct agent *ag)
{
	if (ag->outq.err) {
		sm_log("output frame dropped: %s", ag->outq.err == -EMSGSIZE ? "queue full" : "no memory");
		ag->outq.len = ag->fb_start;
		ag->outq.err = 0;
		return false;
	}
	size_t n = ag->outq.len - ag->fb_start - 4;
	if (n > ag->host_max_frame) {
		sm_log("output frame of %zu bytes exceeds host maxFrame, dropped", n);
		ag->outq.len = ag->fb_start;
		return false;
	}
	uint8_t *p = ag->outq.p + ag->fb_start;
	p[0] = (uint8_t)(n >> 24);
	p[1] = (uint8_t)(n >> 16);
	p[2] = (uint8_t)(n >> 8);
	p[3] = (uint8_t)n;
	return true;
}

size_t outq_pending(struct agent *ag) { return ag->outq.len - ag->out_off + ag->spl_left; }

static void spl_close(struct agent *ag)
{
	if (ag->spl_pipe[0] >= 0) {
		close(ag->spl_pipe[0]);
		close(ag->spl_pipe[1]);
	}
	ag->spl_pipe[0] = ag->spl_pipe[1] = -1;
	ag->spl_left = ag->spl_at = 0;
}

void outq_drop(struct agent *ag)
{
	spl_close(ag); /* a payload still in the pipe belongs to the dropped stream */
	ag->outq.len = 0;
	ag->out_off = 0;
	ag->outq.err = 0;
	if (ag->outq.cap > 256 * 1024)
		cbe_free(&ag->outq);
}

void kv_text(struct agent *ag, const char *k, const char *v)
{
	cbe_text(&ag->outq, k);
	cbe_text(&ag->outq, v);
}

void kv_uint(struct agent *ag, const char *k, uint64_t v)
{
	cbe_text(&ag->outq, k);
	cbe_uint(&ag->outq, v);
}

/* Start a frame: a map of pairs entries, the first "t": t. */
void frame_start(struct agent *ag, const char *t, unsigned pairs)
{
	fbegin(ag);
	cbe_map(&ag->outq, pairs);
	kv_text(ag, "t", t);
}

void send_fatal(struct agent *ag, const char *code, const char *msg)
{
	frame_start(ag, "fatal", 3);
	kv_text(ag, "code", code);
	kv_text(ag, "message", msg);
	fend(ag);
}

void res_begin(struct agent *ag, uint32_t id, unsigned result_pairs)
{
	frame_start(ag, "res", 3);
	kv_uint(ag, "id", id);
	cbe_text(&ag->outq, "result");
	cbe_map(&ag->outq, result_pairs);
}

void pending_del(struct agent *ag, uint32_t id)
{
	for (int i = 0; i < ag->npending; i++)
		if (ag->pending[i] == id) {
			ag->pending[i] = ag->pending[--ag->npending];
			return;
		}
}

bool pending_has(struct agent *ag, uint32_t id)
{
	for (int i = 0; i < ag->npending; i++)
		if (ag->pending[i] == id)
			return true;
	return false;
}

void res_empty(struct agent *ag, uint32_t id)
{
	res_begin(ag, id, 0);
	fend(ag);
}

void res_error(struct agent *ag, uint32_t id, const char *code, const char *msg)
{
	frame_start(ag, "res", 3);
	kv_uint(ag, "id", id);
	cbe_text(&ag->outq, "error");
	cbe_map(&ag->outq, 2);
	kv_text(ag, "code", code);
	kv_text(ag, "message", msg);
	fend(ag);
}

void res_err(struct agent *ag, uint32_t id, const struct sm_err *e)
{
	res_error(ag, id, e->code, e->msg);
}

const char *errno_code(int e)
{
	switch (e) {
	case ENOENT: return "ENOENT";
	case EACCES: return "EACCES";
	case EPERM: return "EPERM";
	case EEXIST: return "EEXIST";
	case ESRCH: return "ESRCH";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ETIMEDOUT: return "ETIMEDOUT";
	case EINVAL: return "EINVAL";
	case EBUSY: return "EBUSY";
	case ENOTDIR: return "ENOTDIR";
	case EISDIR: return "EISDIR";
	case ENOSPC: return "ENOSPC";
	case ENOMEM: return "ENOMEM";
	case EROFS: return "EROFS";
	case ENAMETOOLONG: return "ENAMETOOLONG";
	case ELOOP: return "ELOOP";
	case EMFILE: case ENFILE: return "EMFILE";
	case EAGAIN: return "EAGAIN";
	default: return "EIO";
	}
}

void res_errno(struct agent *ag, uint32_t id, int e, const char *what)
{
	char msg[512];
	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(e));
	res_error(ag, id, errno_code(e), msg);
}

void send_chan_frame(struct agent *ag, const char *t, uint32_t ch)
{
	frame_start(ag, t, 2);
	kv_uint(ag, "ch", ch);
	fend(ag);
}

void send_credit(struct agent *ag, uint32_t ch, uint64_t n)
{
	frame_start(ag, "credit", 3);
	kv_uint(ag, "ch", ch);
	kv_uint(ag, "n", n);
	fend(ag);
}

void send_data(struct agent *ag, uint32_t ch, const uint8_t *p, size_t n)
{
	frame_start(ag, "data", 3);
	kv_uint(ag, "ch", ch);
	cbe_text(&ag->outq, "d");
	cbe_bytes(&ag->outq, p, n);
	fend(ag);
}

/* TCP channel → port without copying through user space: splice up to `room` bytes from the socket
 * into spl_pipe, queue the data frame's header, and let port_flush splice the payload after it (the
 * pipe → virtio-serial splice hands the port whole pages: one kernel copy per byte instead of recv +
 * queue memcpy + write). Returns the bytes taken (0 = EOF), or -1 with errno (EAGAIN: nothing to
 * read; ENOSYS: splice unusable, relay by read). Only while no earlier payload waits in the pipe. */
ssize_t splice_data(struct agent *ag, struct chan *c, size_t room)
{
	if (ag->spl_off || ag->spl_left) {
		errno = ENOSYS;
		return -1;
	}
	if (ag->spl_pipe[0] < 0 && pipe2(ag->spl_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
		ag->spl_pipe[0] = ag->spl_pipe[1] = -1;
		ag->spl_off = true;
		errno = ENOSYS;
		return -1;
	}
	ssize_t n = splice(c->rw.fd, NULL, ag->spl_pipe[1], NULL, room, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
	if (n < 0 && errno == EINVAL) {
		ag->spl_off = true;
		errno = ENOSYS;
	}
	if (n <= 0)
		return n;
	frame_start(ag, "data", 3);
	kv_uint(ag, "ch", c->id);
	cbe_text(&ag->outq, "d");
	cbe_head(&ag->outq, 2, (uint64_t)n);
	size_t len = ag->outq.len - ag->fb_start - 4 + (size_t)n;
	if (ag->outq.err || len > ag->host_max_frame) {
		/* cannot frame it: the bytes are in the pipe already, so this stream cannot go on */
		sm_log("relay: data frame for channel %u dropped", c->id);
		ag->outq.len = ag->fb_start;
		ag->outq.err = 0;
		spl_close(ag);
		errno = EIO;
		return -1;
	}
	uint8_t *p = ag->outq.p + ag->fb_start;
	p[0] = (uint8_t)(len >> 24);
	p[1] = (uint8_t)(len >> 16);
	p[2] = (uint8_t)(len >> 8);
	p[3] = (uint8_t)len;
	ag->spl_at = ag->outq.len;
	ag->spl_left = (size_t)n;
	return n;
}

void evt_begin(struct agent *ag, const char *ev, unsigned pairs)
{
	frame_start(ag, "evt", 3);
	kv_text(ag, "ev", ev);
	cbe_text(&ag->outq, "data");
	cbe_map(&ag->outq, pairs);
}

void enc_exit_fields(struct agent *ag, const struct proc *p)
{
	int st = p->status;
	cbe_text(&ag->outq, "exitCode");
	if (WIFEXITED(st))
		cbe_int(&ag->outq, WEXITSTATUS(st));
	else
		cbe_int(&ag->outq, -1);
	cbe_text(&ag->outq, "signal");
	if (WIFSIGNALED(st))
		cbe_uint(&ag->outq, (uint64_t)WTERMSIG(st));
	else
		cbe_null(&ag->outq);
}
