/* Channels (SPEC 8): allocation and release, credit flow control both ways, reading process
 * pipes / ptys / sockets into data frames, the host's data/eof/credit/close frames, tcp-connect. */
#include "agent_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct chan *chan_find(struct agent *ag, uint32_t id)
{
	for (int i = 0; i < SM_MAX_CHANNELS; i++)
		if (ag->chans[i].state != CH_FREE && !ag->chans[i].removed && ag->chans[i].id == id)
			return &ag->chans[i];
	return NULL;
}

int chan_free_slots(struct agent *ag)
{
	int n = 0;
	for (int i = 0; i < SM_MAX_CHANNELS; i++)
		n += ag->chans[i].state == CH_FREE;
	return n;
}

struct chan *chan_alloc(struct agent *ag, uint32_t id)
{
	for (int i = 0; i < SM_MAX_CHANNELS; i++) {
		struct chan *c = &ag->chans[i];
		if (c->state == CH_FREE) {
			memset(c, 0, sizeof(*c));
			c->state = CH_OPEN;
			c->id = id;
			c->rw.fd = c->ww.fd = -1;
			c->rw.kind = W_CH_R;
			c->ww.kind = W_CH_W;
			c->rw.obj = c->ww.obj = c;
			c->credit = ag->host_window;
			c->granted = SM_WINDOW_BYTES;
			return c;
		}
	}
	return NULL;
}

void chan_release(struct agent *ag, struct chan *c)
{
	rd_forget(ag, c);
	if (c->fs)
		share_orphan(c->fs);
	watch_close(ag, &c->rw);
	watch_close(ag, &c->ww);
	free(c->cbuf);
	free(c->ibuf);
	if (c->proc) {
		if (c->proc->out == c)
			c->proc->out = NULL;
		if (c->proc->err == c)
			c->proc->err = NULL;
		if (c->proc->in == c)
			c->proc->in = NULL;
	}
	memset(c, 0, sizeof(*c));
	c->rw.fd = c->ww.fd = -1;
}

/* Free the slot when the protocol no longer knows it and no resources remain. */
void chan_maybe_release(struct agent *ag, struct chan *c)
{
	if (c->state == CH_FREE || !c->removed)
		return;
	if (c->rw.fd >= 0 || c->ww.fd >= 0 || c->collect)
		return;
	chan_release(ag, c);
}

/* Our agent->host half: after eof it is closed. */
static bool half_out_closed(const struct chan *c) { return !c->out_open; }

static void chan_remove(struct agent *ag, struct chan *c)
{
	c->removed = true;
	chan_maybe_release(ag, c);
}

static void chan_check_removed(struct agent *ag, struct chan *c)
{
	if (c->state == CH_OPEN && !c->out_open && !c->in_open && !c->collect)
		chan_remove(ag, c);
}

/* The agent aborts a channel: send close, enter CLOSING, drop our resources. */
void chan_send_close(struct agent *ag, struct chan *c)
{
	if (c->state != CH_OPEN || c->removed)
		return;
	send_chan_frame(ag, "close", c->id);
	c->state = CH_CLOSING;
	c->out_open = false;
	free(c->ibuf);
	c->ibuf = NULL;
	c->ilen = c->ioff = 0;
	watch_close(ag, &c->ww);
	if (c->tcp)
		watch_close(ag, &c->rw);
}

static void chan_in_drained(struct agent *ag, struct chan *c)
{
	/* host eof and everything written: close stdin / half-close the socket */
	if (c->ww.fd < 0)
		return;
	if (c->tty_in) {
		uint8_t veof = 0x04;
		ssize_t w = write(c->ww.fd, &veof, 1);
		(void)w;
		watch_close(ag, &c->ww);
	} else if (c->tcp) {
		shutdown(c->ww.fd, SHUT_WR);
		watch_close(ag, &c->ww);
		if (c->r_eof)
			watch_close(ag, &c->rw);
	} else {
		watch_close(ag, &c->ww);
	}
	chan_maybe_release(ag, c);
}

void chan_write(struct agent *ag, struct chan *c)
{
	while (c->ww.fd >= 0 && c->ioff < c->ilen) {
		ssize_t n = write(c->ww.fd, c->ibuf + c->ioff, c->ilen - c->ioff);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			/* reader gone (EPIPE) or reset: the stream is dead */
			watch_close(ag, &c->ww);
			if (!c->removed && c->state == CH_OPEN && c->in_open)
				chan_send_close(ag, c);
			else {
				free(c->ibuf);
				c->ibuf = NULL;
				c->ilen = c->ioff = 0;
			}
			chan_maybe_release(ag, c);
			return;
		}
		c->ioff += (uint32_t)n;
		c->consumed += (uint64_t)n;
		if (ag->session && !c->removed && c->state == CH_OPEN && c->in_open &&
		    c->consumed >= SM_WINDOW_BYTES / 2) {
			send_credit(ag, c->id, c->consumed);
			c->granted += c->consumed;
			c->consumed = 0;
		}
	}
	if (c->ioff == c->ilen) {
		c->ioff = c->ilen = 0;
		if (c->in_eof)
			chan_in_drained(ag, c);
	}
}

/* Exec collect: push full buffers out as data frames while credit lasts. */
void collect_flush(struct agent *ag, struct chan *c)
{
	while (c->clen == SM_COLLECT_BUF_BYTES && c->credit > 0 && !c->removed && c->state == CH_OPEN &&
	       ag->session) {
		size_t n = c->clen;
		if (n > c->credit)
			n = (size_t)c->credit;
		size_t maxd = ag->host_max_frame - SM_DATA_OVERHEAD_BYTES;
		if (n > maxd)
			n = maxd;
		send_data(ag, c->id, c->cbuf, n);
		c->credit -= n;
		memmove(c->cbuf, c->cbuf + n, c->clen - n);
		c->clen -= (uint32_t)n;
	}
}

void chan_read_eof(struct agent *ag, struct chan *c)
{
	c->r_eof = true;
	if (c->tcp) {
		/* keep the socket for the other direction; only stop reading */
		if (c->rw.reg)
			watch_set(ag, &c->rw, 0);
	} else {
		watch_close(ag, &c->rw);
	}
	if (!c->collect && c->out_open && !c->removed && c->state == CH_OPEN) {
		send_chan_frame(ag, "eof", c->id);
		c->out_open = false;
		if (c->tcp && c->ww.fd < 0 && !c->in_open)
			watch_close(ag, &c->rw);
		chan_check_removed(ag, c);
	}
}

/* After a read of n bytes (room offered) from a tcp channel: true when the next read waits until
 * c->hold_until (SM_TCP_BATCH_MS), i.e. the writer streams in small pieces. */
static bool tcp_hold(struct chan *c, size_t n, size_t room)
{
	int64_t now = mono_ms();
	int64_t gap = now - c->last_read_ms;
	c->last_read_ms = now;
	if (n >= room) /* the buffer was full: more is waiting, read on */
		return false;
	if (c->streaming && (n < SM_TCP_TRICKLE_BYTES || gap > 4 * SM_TCP_BATCH_MS))
		c->streaming = false; /* the stream slowed down or paused: back to reading at once */
	else if (!c->streaming) {
		c->small_run = gap <= SM_TCP_BATCH_GAP_MS ? (uint8_t)(c->small_run + 1) : 0;
		if (c->small_run >= SM_TCP_BATCH_RUN)
			c->streaming = true;
	}
	if (!c->streaming)
		return false;
	c->small_run = 0;
	c->hold_until = now + SM_TCP_BATCH_MS;
	return true;
}

/* Read from a process pipe / pty / socket. max_reads bounds one call (fairness);
 * returns true when the fd would block (drained for now). */
bool chan_pump(struct agent *ag, struct chan *c, int max_reads)
{
	for (int i = 0; i < max_reads; i++) {
		if (c->rw.fd < 0 || c->r_eof || c->r_stuck)
			return true;
		ssize_t n;
		if (c->collect) {
			if (c->clen == SM_COLLECT_BUF_BYTES) {
				collect_flush(ag, c);
				if (c->clen == SM_COLLECT_BUF_BYTES) {
					if (c->removed || c->state != CH_OPEN || !ag->session) {
						c->clen = 0; /* cancelled: discard */
						continue;
					}
					return false; /* waiting for credit */
				}
			}
			n = guarded_read(ag, c, c->cbuf + c->clen, SM_COLLECT_BUF_BYTES - c->clen);
			if (n > 0) {
				c->clen += (uint32_t)n;
				continue;
			}
		} else {
			size_t room = sizeof(ag->rdbuf);
			bool discard = c->removed || c->state != CH_OPEN || !ag->session;
			if (!discard) {
				if (room > c->credit)
					room = (size_t)c->credit;
				size_t maxd = ag->host_max_frame - SM_DATA_OVERHEAD_BYTES;
				if (room > maxd)
					room = maxd;
				if (room == 0 || outq_pending(ag) > SM_OUTQ_SOFT_BYTES)
					return false;
			}
			n = guarded_read(ag, c, ag->rdbuf, room);
			if (n > 0) {
				if (!discard) {
					send_data(ag, c->id, ag->rdbuf, (size_t)n);
					c->credit -= (uint64_t)n;
				}
				if (c->tcp && tcp_hold(c, (size_t)n, room))
					return true;
				continue;
			}
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			c->r_blocked = true;
			return true;
		}
		/* 0 = EOF; EIO on a pty master = all slave ends closed */
		chan_read_eof(ag, c);
		return true;
	}
	return false;
}

bool ids_fresh(struct agent *ag, const uint32_t *ids, int n)
{
	for (int i = 0; i < n; i++)
		if (ids[i] <= ag->last_ch)
			return false;
	return true;
}

void ids_commit(struct agent *ag, const uint32_t *ids, int n)
{
	for (int i = 0; i < n; i++)
		if (ids[i] > ag->last_ch)
			ag->last_ch = ids[i];
}

void in_eof(struct agent *ag, struct chan *c)
{
	c->in_eof = true;
	c->in_open = false;
	if (c->ioff == c->ilen)
		chan_in_drained(ag, c);
}

void tcp_connected(struct agent *ag, struct chan *c, int err)
{
	c->connecting = false;
	pending_del(ag, c->req_id);
	if (err) {
		char msg[128];
		snprintf(msg, sizeof(msg), "connect 127.0.0.1: %s", strerror(err));
		res_error(ag, c->req_id, errno_code(err), msg);
		chan_release(ag, c);
		return;
	}
	res_empty(ag, c->req_id);
	c->out_open = c->in_open = true;
	c->rw.kind = W_CH_R;
	c->ww.fd = fcntl(c->rw.fd, F_DUPFD_CLOEXEC, 3);
	if (c->ww.fd < 0) {
		chan_send_close(ag, c);
		return;
	}
}

void op_tcp_connect(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint64_t port, ch;
	struct sm_err e;
	if (args_uint(d, args, "port", true, 1, 65535, &port, &e) < 0 ||
	    args_uint(d, args, "ch", true, 1, UINT32_MAX, &ch, &e) < 0) {
		res_err(ag, id, &e);
		return;
	}
	uint32_t ids[1] = {(uint32_t)ch};
	if (!ids_fresh(ag, ids, 1)) {
		res_error(ag, id, "EINVAL", "ch: channel ids must be greater than every id used before");
		return;
	}
	ids_commit(ag, ids, 1);
	struct chan *c = chan_alloc(ag, (uint32_t)ch);
	if (!c) {
		res_error(ag, id, "EBUSY", "too many open channels");
		return;
	}
	c->tcp = true;
	c->removed = true; /* not open until the successful res */
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0) {
		chan_release(ag, c);
		res_errno(ag, id, errno, "socket");
		return;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->rw.fd = s;
	c->req_id = id;
	ag->pending[ag->npending++] = id;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		c->removed = false;
		tcp_connected(ag, c, 0);
		return;
	}
	if (errno != EINPROGRESS) {
		c->removed = false;
		tcp_connected(ag, c, errno);
		return;
	}
	c->connecting = true;
	c->rw.kind = W_TCP_CONN;
	c->deadline = mono_ms() + SM_TCP_CONNECT_TIMEOUT_MS;
}

void handle_chan_frame(struct agent *ag, const struct cb_doc *d, const struct frame_info *fi)
{
	struct chan *c = chan_find(ag, fi->ch);
	switch (fi->kind) {
	case FK_DATA: {
		uint32_t n = d->items[fi->d].len;
		if (!c) {
			violation(ag, E_UNKNOWN_CHANNEL, "data for an unknown channel");
			return;
		}
		if (c->state == CH_CLOSING)
			return;
		if (!c->in_open) {
			if (c->in_eof)
				violation(ag, E_DATA_AFTER_EOF, "data after eof");
			else
				violation(ag, E_UNKNOWN_CHANNEL, "wrong direction");
			return;
		}
		if (n > c->granted) {
			violation(ag, E_CREDIT_EXCEEDED, "data beyond the granted credit");
			return;
		}
		c->granted -= n;
		if (c->fs) {
			share_from_host(ag, c, cb_ptr(d, fi->d), n);
			return;
		}
		if (c->ww.fd < 0) {
			/* consumer gone: discard but keep the host's credit flowing */
			c->consumed += n;
			if (c->consumed >= SM_WINDOW_BYTES / 2) {
				send_credit(ag, c->id, c->consumed);
				c->granted += c->consumed;
				c->consumed = 0;
			}
			return;
		}
		if (!c->ibuf) {
			c->ibuf = malloc(SM_WINDOW_BYTES);
			if (!c->ibuf) {
				chan_send_close(ag, c);
				return;
			}
		}
		if (c->ioff > 0 && c->ilen + n > SM_WINDOW_BYTES) {
			memmove(c->ibuf, c->ibuf + c->ioff, c->ilen - c->ioff);
			c->ilen -= c->ioff;
			c->ioff = 0;
		}
		if (c->ilen + n > SM_WINDOW_BYTES) {
			/* cannot happen while credit accounting holds */
			violation(ag, E_CREDIT_EXCEEDED, "receive buffer overflow");
			return;
		}
		memcpy(c->ibuf + c->ilen, cb_ptr(d, fi->d), n);
		c->ilen += n;
		chan_write(ag, c);
		return;
	}
	case FK_EOF:
		if (!c) {
			violation(ag, E_UNKNOWN_CHANNEL, "eof for an unknown channel");
			return;
		}
		if (c->state == CH_CLOSING) {
			if (half_out_closed(c))
				chan_remove(ag, c);
			return;
		}
		if (!c->in_open) {
			violation(ag, c->in_eof ? E_DATA_AFTER_EOF : E_UNKNOWN_CHANNEL,
				  c->in_eof ? "second eof" : "wrong direction");
			return;
		}
		if (c->fs) {
			/* the host stops answering: the share is orphaned (SPEC 6.4) */
			c->in_eof = true;
			c->in_open = false;
			share_orphan(c->fs);
			chan_send_close(ag, c);
			return;
		}
		in_eof(ag, c);
		chan_check_removed(ag, c);
		return;
	case FK_CREDIT:
		if (!c || c->state == CH_CLOSING)
			return;
		if (!c->out_open) {
			if (!c->collect && !c->tcp && c->in_open && !c->in_eof && c->proc && c->proc->in == c)
				violation(ag, E_UNKNOWN_CHANNEL, "credit for a half the agent never sends on");
			return; /* crossed our eof */
		}
		if (c->credit > ag->host_window || fi->n > ag->host_window - c->credit) {
			violation(ag, E_CREDIT_OVERFLOW, "credit beyond the window");
			return;
		}
		c->credit += fi->n;
		if (c->collect)
			collect_flush(ag, c);
		return;
	case FK_CLOSE:
		if (!c)
			return;
		if (c->state == CH_CLOSING) {
			chan_remove(ag, c);
			return;
		}
		if (c->fs)
			share_orphan(c->fs);
		send_chan_frame(ag, "close", c->id);
		if (c->collect && c->proc) {
			/* exec cancellation (SPEC 6.1) */
			struct proc *p = c->proc;
			kill_group(p->pid);
			p->cancelled = true;
			c->clen = 0;
			c->removed = true; /* no more frames on it; released with the exec */
			return;
		}
		free(c->ibuf);
		c->ibuf = NULL;
		c->ilen = c->ioff = 0;
		watch_close(ag, &c->ww);
		if (c->tcp) {
			struct linger lg = {1, 0}; /* reset */
			if (c->rw.fd >= 0)
				setsockopt(c->rw.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		watch_close(ag, &c->rw);
		c->r_eof = true;
		c->out_open = c->in_open = false;
		chan_remove(ag, c);
		return;
	default:
		return;
	}
}
