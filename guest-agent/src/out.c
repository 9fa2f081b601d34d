/* Output: frames built into the output queue (res, evt, data, credit, eof/close, fatal), the
 * pending request ids, errno names. */
#include "agent_int.h"

#include <errno.h>
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

size_t outq_pending(struct agent *ag) { return ag->outq.len - ag->out_off; }

void outq_drop(struct agent *ag)
{
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
