/* The protocol server: single-threaded epoll loop over the transport, signals,
 * process pipes/ptys and TCP sockets (SPEC sections 4-9). Every input is hostile:
 * allocations are bounded, violations end the session, never the process. */
#include "egress.h"
#include "fuse.h"
#include "sharebinds.h"
#include "proto.h"
#include "sm.h"
#include "vsock.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* from <linux/random.h>; defined here because musl ships no kernel headers */
#define SM_RNDADDENTROPY _IOW('R', 0x03, int[2])
#define SM_RNDRESEEDCRNG _IO('R', 0x07)

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

enum wkind { W_PORT = 1, W_SIG, W_CH_R, W_CH_W, W_TCP_CONN, W_VSOCK, W_FJOB };

#define W_FUSE 16 /* watch kind of a share's /dev/fuse (kept apart from the enum above) */
#define W_RDDONE 17 /* eventfd: a stuck pipe read returned (guarded_read) */
#define W_EG_SOCK 18 /* egress: listener fds passed by children */
#define W_EG_LIS 19  /* egress: one seccomp notification fd */
#define W_EG_DNS 20  /* egress: the DNS stub socket */

struct watch {
	uint8_t kind;
	bool reg;
	int fd;
	uint32_t cur;
	void *obj;
};

enum chstate { CH_FREE = 0, CH_OPEN, CH_CLOSING };

struct proc;
struct share;

struct chan {
	uint8_t state;
	bool removed; /* protocol-level: unknown to lookups, resources may linger */
	uint32_t id;
	struct proc *proc;
	bool collect; /* exec collect stream */
	bool tcp;
	/* agent -> host half */
	bool out_open;
	struct watch rw;
	bool r_eof;
	bool r_blocked; /* last read would block */
	bool r_stuck;   /* a guarded read is pending on a worker thread */
	struct rd_worker *rd;
	uint64_t credit;
	uint8_t *cbuf;
	uint32_t clen;
	/* host -> agent half */
	bool in_open;
	bool in_eof;
	struct watch ww;
	bool tty_in;
	uint8_t *ibuf;
	uint32_t ioff, ilen;
	uint64_t granted; /* bytes the host may still send */
	uint64_t consumed;
	struct share *fs; /* fs-attach channel of this share */
	/* tcp-connect pending */
	bool connecting;
	uint32_t req_id;
	int64_t deadline;
};

enum pkind { PK_EXEC = 1, PK_SPAWN, PK_WORKLOAD };

/* A live host share (SPEC 6.4). Orphaned = used && !ch: the agent answers EIO itself. */
struct share {
	bool used;
	bool dead; /* /dev/fuse read failed: connection aborted or file system gone */
	char tag[FS_TAG_MAX + 1];
	struct watch w; /* /dev/fuse */
	struct chan *ch;
	uint8_t *req;               /* FS_REQ_BUF: the request being sent to the host */
	uint32_t req_len, req_off;
	struct fs_relay relay;
	char *path; /* fs-attach's path (NULL: none): not one of the users' binds */
};

struct child_spec {
	char **argv;
	char **envp;
	char *cwd;
	struct sm_user user;
};

struct proc {
	bool used;
	uint8_t kind;
	pid_t pid;
	bool exited;
	int status;
	uint64_t peak_rss;
	uint64_t sess;
	struct chan *out, *err, *in;
	int pty; /* master dup for TIOCSWINSZ, -1 */
	bool tty;
	/* exec */
	bool pending;
	uint32_t req_id;
	int64_t deadline;
	bool timed_out, cancelled;
	struct child_spec *chain;
	bool exit_sent;
};

#define RD_WORKERS_MAX 64
#define RD_WAIT_MS 20

struct rd_worker {
	struct rd_pool *pool;
	bool started, busy, done, detached;
	int fd;
	size_t len;
	ssize_t res;
	int err;
	struct chan *c; /* detached: the channel waiting for this read, NULL when it went away */
	uint8_t buf[SM_DATA_CHUNK_BYTES];
};

/* the worker pool: guarded by mu; efd is the eventfd that reports reads that were stuck */
struct rd_pool {
	struct rd_worker *workers[RD_WORKERS_MAX];
	pthread_mutex_t mu;
	pthread_cond_t job_cv, done_cv;
	int efd;
	struct watch w;
};

enum fjob_kind { FJ_WRITE, FJ_READ, FJ_STAGE };
struct exec_cont;

#define SM_MAX_FILE_JOBS 16
#define SM_FILE_JOB_TIMEOUT_MS 60000

struct file_job {
	bool used;
	enum fjob_kind kind;
	struct exec_cont *cont; /* FJ_STAGE: the exec to launch (owned) */
	struct watch w;
	pid_t pid;
	uint32_t req_id, sess;
	int64_t deadline;
	uint8_t *buf;
	size_t cap, got, limit;
	char *path;
};

struct agent {
	struct sm_config *cfg;
	int64_t boot_ms;
	int ep, sfd;
	struct watch port_w, sig_w;
	int port;
	char port_path[64];
	bool connected;
	int64_t next_port_probe;
	/* session */
	bool session;
	uint64_t sess;
	uint32_t host_max_frame, host_window;
	bool listening_reported;
	uint32_t last_ch;
	uint32_t pending[SM_MAX_PENDING];
	int npending;
	/* io */
	struct cb_buf outq;
	size_t out_off;
	uint8_t *in;
	size_t in_len, in_cap;
	struct cb_item *items;
	/* state */
	struct chan chans[SM_MAX_CHANNELS];
	struct proc procs[SM_MAX_PROCS];
	struct share shares[FS_MAX_SHARES];
	bool helper_installed;
	pid_t wl_pid;
	bool wl_started;
	bool listening_seen;
	int64_t next_listen_poll;
	int64_t listen_interval; /* grows from SM_LISTEN_POLL_MS to SM_LISTEN_POLL_MAX_MS */
	bool shutting_down;
	bool exit_on_hup; /* test mode */
	uint32_t tmp_counter;
	/* egress (SPEC 6.5), only as PID 1 without a configured network device */
	bool eg_on;
	int eg_pair[2]; /* [0] agent end (watched), [1] children send their listener on it */
	struct watch eg_w, eg_dns_w;
	struct eg_lis {
		bool used;
		struct watch w;
	} eg_lis[SM_EG_MAX_LISTENERS];
	struct eg_dial {
		bool used;
		uint32_t id;
		struct eg_lis *lis;
		uint64_t notif;
		int sock, family;
		int64_t deadline;
	} eg_dials[SM_EG_MAX_DIALS];
	uint32_t eg_next_dial, eg_next_q;
	struct eg_q {
		bool used;
		uint32_t id;
		int64_t t;
		struct sockaddr_in from;
	} eg_q[SM_EG_MAX_DNS];
	int64_t eg_dns_window;
	uint32_t eg_dns_count;
	int eg_child_fd; /* send end of eg_pair for child_exec (-1: no trap) */
	struct rd_pool rd;
	struct file_job fjobs[SM_MAX_FILE_JOBS];
	struct watch vsock_w; /* vsock.c: a complete host hello on another transport */
	size_t fb_start;      /* the frame being built in outq */
	uint8_t rdbuf[SM_DATA_CHUNK_BYTES];
};


/* ------------------------------------------------------------------ output */


static void fbegin(struct agent *ag)
{
	ag->fb_start = ag->outq.len;
	cbe_raw(&ag->outq, "\0\0\0\0", 4);
}

static bool fend(struct agent *ag)
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

static size_t outq_pending(struct agent *ag) { return ag->outq.len - ag->out_off; }

static void outq_drop(struct agent *ag)
{
	ag->outq.len = 0;
	ag->out_off = 0;
	ag->outq.err = 0;
	if (ag->outq.cap > 256 * 1024)
		cbe_free(&ag->outq);
}

static void kv_text(struct agent *ag, const char *k, const char *v)
{
	cbe_text(&ag->outq, k);
	cbe_text(&ag->outq, v);
}

static void kv_uint(struct agent *ag, const char *k, uint64_t v)
{
	cbe_text(&ag->outq, k);
	cbe_uint(&ag->outq, v);
}

static void send_fatal(struct agent *ag, const char *code, const char *msg)
{
	fbegin(ag);
	cbe_map(&ag->outq, 3);
	kv_text(ag, "t", "fatal");
	kv_text(ag, "code", code);
	kv_text(ag, "message", msg);
	fend(ag);
}

static void res_begin(struct agent *ag, uint32_t id, unsigned result_pairs)
{
	fbegin(ag);
	cbe_map(&ag->outq, 3);
	kv_text(ag, "t", "res");
	kv_uint(ag, "id", id);
	cbe_text(&ag->outq, "result");
	cbe_map(&ag->outq, result_pairs);
}

static void pending_del(struct agent *ag, uint32_t id)
{
	for (int i = 0; i < ag->npending; i++)
		if (ag->pending[i] == id) {
			ag->pending[i] = ag->pending[--ag->npending];
			return;
		}
}

static bool pending_has(struct agent *ag, uint32_t id)
{
	for (int i = 0; i < ag->npending; i++)
		if (ag->pending[i] == id)
			return true;
	return false;
}

static void res_empty(struct agent *ag, uint32_t id)
{
	res_begin(ag, id, 0);
	fend(ag);
}

static void res_error(struct agent *ag, uint32_t id, const char *code, const char *msg)
{
	fbegin(ag);
	cbe_map(&ag->outq, 3);
	kv_text(ag, "t", "res");
	kv_uint(ag, "id", id);
	cbe_text(&ag->outq, "error");
	cbe_map(&ag->outq, 2);
	kv_text(ag, "code", code);
	kv_text(ag, "message", msg);
	fend(ag);
}

static const char *errno_code(int e)
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

static void res_errno(struct agent *ag, uint32_t id, int e, const char *what)
{
	char msg[512];
	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(e));
	res_error(ag, id, errno_code(e), msg);
}

static void send_chan_frame(struct agent *ag, const char *t, uint32_t ch)
{
	fbegin(ag);
	cbe_map(&ag->outq, 2);
	kv_text(ag, "t", t);
	kv_uint(ag, "ch", ch);
	fend(ag);
}

static void send_credit(struct agent *ag, uint32_t ch, uint64_t n)
{
	fbegin(ag);
	cbe_map(&ag->outq, 3);
	kv_text(ag, "t", "credit");
	kv_uint(ag, "ch", ch);
	kv_uint(ag, "n", n);
	fend(ag);
}

static void send_data(struct agent *ag, uint32_t ch, const uint8_t *p, size_t n)
{
	fbegin(ag);
	cbe_map(&ag->outq, 3);
	kv_text(ag, "t", "data");
	kv_uint(ag, "ch", ch);
	cbe_text(&ag->outq, "d");
	cbe_bytes(&ag->outq, p, n);
	fend(ag);
}

static void evt_begin(struct agent *ag, const char *ev, unsigned pairs)
{
	fbegin(ag);
	cbe_map(&ag->outq, 3);
	kv_text(ag, "t", "evt");
	kv_text(ag, "ev", ev);
	cbe_text(&ag->outq, "data");
	cbe_map(&ag->outq, pairs);
}

static void enc_exit_fields(struct agent *ag, const struct proc *p)
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

/* ------------------------------------------------------------------ epoll */

static void watch_set(struct agent *ag, struct watch *w, uint32_t want)
{
	if (w->fd < 0)
		return;
	if (!want) {
		/* deregister entirely: EPOLLHUP is reported even with an empty mask */
		if (w->reg) {
			epoll_ctl(ag->ep, EPOLL_CTL_DEL, w->fd, NULL);
			w->reg = false;
		}
		w->cur = 0;
		return;
	}
	if (w->reg && w->cur == want)
		return;
	struct epoll_event ev = {.events = want, .data.ptr = w};
	if (epoll_ctl(ag->ep, w->reg ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, w->fd, &ev) == 0) {
		w->reg = true;
		w->cur = want;
	}
}

static void watch_close(struct agent *ag, struct watch *w)
{
	if (w->fd >= 0) {
		if (w->reg)
			epoll_ctl(ag->ep, EPOLL_CTL_DEL, w->fd, NULL);
		close(w->fd);
	}
	w->fd = -1;
	w->reg = false;
	w->cur = 0;
}

/* ------------------------------------------------------------------ channels */

static struct chan *chan_find(struct agent *ag, uint32_t id)
{
	for (int i = 0; i < SM_MAX_CHANNELS; i++)
		if (ag->chans[i].state != CH_FREE && !ag->chans[i].removed && ag->chans[i].id == id)
			return &ag->chans[i];
	return NULL;
}

static int chan_free_slots(struct agent *ag)
{
	int n = 0;
	for (int i = 0; i < SM_MAX_CHANNELS; i++)
		n += ag->chans[i].state == CH_FREE;
	return n;
}

static struct chan *chan_alloc(struct agent *ag, uint32_t id)
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

static void share_orphan(struct share *s);

static void rd_forget(struct agent *ag, struct chan *c);

static void chan_release(struct agent *ag, struct chan *c)
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
static void chan_maybe_release(struct agent *ag, struct chan *c)
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
static void chan_send_close(struct agent *ag, struct chan *c)
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

static void proc_check_done(struct agent *ag, struct proc *p);

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

static void chan_write(struct agent *ag, struct chan *c)
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
static void collect_flush(struct agent *ag, struct chan *c)
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

static void chan_read_eof(struct agent *ag, struct chan *c)
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

static ssize_t guarded_read(struct agent *ag, struct chan *c, uint8_t *buf, size_t len);

/* Read from a process pipe / pty / socket. max_reads bounds one call (fairness);
 * returns true when the fd would block (drained for now). */
static bool chan_pump(struct agent *ag, struct chan *c, int max_reads)
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

/* ------------------------------------------------------------------ guarded pipe reads */

/* read(2) on a pipe sleeps uninterruptibly on the pipe's mutex, and a process splicing
 * from a FUSE file into that pipe (busybox cat uses sendfile) holds the mutex while it
 * waits for the FUSE server, i.e. for this loop, which relays the share's requests
 * (SPEC 6.4). So process-pipe reads run on worker threads: the loop waits briefly for
 * the result; if the read is stuck it goes on, and the worker reports through an
 * eventfd once the read returns. */

static void *rd_main(void *arg)
{
	struct rd_worker *w = arg;
	struct rd_pool *pool = w->pool;
	pthread_mutex_lock(&pool->mu);
	for (;;) {
		while (!w->busy || w->done)
			pthread_cond_wait(&pool->job_cv, &pool->mu);
		int fd = w->fd;
		size_t len = w->len;
		pthread_mutex_unlock(&pool->mu);
		ssize_t n = read(fd, w->buf, len);
		int e = errno;
		pthread_mutex_lock(&pool->mu);
		w->res = n;
		w->err = e;
		w->done = true;
		if (w->detached) {
			uint64_t one = 1;
			ssize_t wr = write(pool->efd, &one, sizeof(one));
			(void)wr;
		}
		pthread_cond_broadcast(&pool->done_cv);
	}
	return NULL;
}

static struct rd_worker *rd_idle(struct rd_pool *pool)
{
	for (int i = 0; i < RD_WORKERS_MAX; i++) {
		struct rd_worker *w = pool->workers[i];
		if (w && !w->busy)
			return w;
		if (!w) {
			w = calloc(1, sizeof(*w));
			if (!w)
				return NULL;
			w->pool = pool;
			pthread_t th;
			pthread_attr_t at;
			pthread_attr_init(&at);
			pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
			pthread_attr_setstacksize(&at, 64 * 1024);
			int r = pthread_create(&th, &at, rd_main, w);
			pthread_attr_destroy(&at);
			if (r != 0) {
				free(w);
				return NULL;
			}
			pool->workers[i] = w;
			return w;
		}
	}
	return NULL;
}

static void rd_init(struct agent *ag)
{
	pthread_mutex_init(&ag->rd.mu, NULL);
	pthread_cond_init(&ag->rd.job_cv, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ag->rd.done_cv, &ca);
	pthread_condattr_destroy(&ca);
	ag->rd.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

/* read() for process pipes/ptys: -1/EAGAIN with c->r_stuck when the read did not return in
 * RD_WAIT_MS (the result arrives later through rd_collect). */
static bool any_share(struct agent *ag);
static ssize_t guarded_read(struct agent *ag, struct chan *c, uint8_t *buf, size_t len)
{
	/* Without an attached share no splice can hold a pipe waiting for this loop: read directly
	 * (a worker handoff costs two context switches per read, which is most of an exec under TCG). */
	if (ag->rd.efd < 0 || c->tcp || !any_share(ag))
		return read(c->rw.fd, buf, len);
	if (len > SM_DATA_CHUNK_BYTES)
		len = SM_DATA_CHUNK_BYTES;
	pthread_mutex_lock(&ag->rd.mu);
	struct rd_worker *w = rd_idle(&ag->rd);
	if (!w) {
		pthread_mutex_unlock(&ag->rd.mu);
		errno = EAGAIN; /* every worker is stuck: rd_collect retries once one is free */
		c->r_stuck = true;
		return -1;
	}
	w->busy = true;
	w->done = w->detached = false;
	w->fd = c->rw.fd;
	w->len = len;
	w->c = c;
	pthread_cond_broadcast(&ag->rd.job_cv);
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_nsec += RD_WAIT_MS * 1000000L;
	if (dl.tv_nsec >= 1000000000L)
		dl.tv_sec++, dl.tv_nsec -= 1000000000L;
	while (!w->done)
		if (pthread_cond_timedwait(&ag->rd.done_cv, &ag->rd.mu, &dl) == ETIMEDOUT)
			break;
	if (!w->done) {
		w->detached = true;
		c->r_stuck = true;
		c->rd = w;
		pthread_mutex_unlock(&ag->rd.mu);
		errno = EAGAIN;
		return -1;
	}
	ssize_t n = w->res;
	int e = w->err;
	if (n > 0)
		memcpy(buf, w->buf, (size_t)n);
	w->busy = false;
	w->c = NULL;
	pthread_mutex_unlock(&ag->rd.mu);
	errno = e;
	return n;
}

/* A channel goes away while its read is stuck: the result will be discarded. */
static void rd_forget(struct agent *ag, struct chan *c)
{
	if (!c->rd)
		return;
	pthread_mutex_lock(&ag->rd.mu);
	c->rd->c = NULL;
	pthread_mutex_unlock(&ag->rd.mu);
	c->rd = NULL;
}

static void chan_read_eof(struct agent *ag, struct chan *c);

/* eventfd: deliver the results of reads that were stuck. */
static void rd_collect(struct agent *ag)
{
	uint64_t v;
	ssize_t r = read(ag->rd.efd, &v, sizeof(v));
	(void)r;
	for (int i = 0; i < RD_WORKERS_MAX; i++) {
		struct rd_worker *w = ag->rd.workers[i];
		if (!w)
			continue;
		pthread_mutex_lock(&ag->rd.mu);
		bool ready = w->busy && w->detached && w->done;
		struct chan *c = w->c;
		ssize_t n = w->res;
		pthread_mutex_unlock(&ag->rd.mu);
		if (!ready)
			continue;
		if (c && c->rd == w) {
			c->rd = NULL;
			c->r_stuck = false;
			if (n > 0 && c->rw.fd >= 0) {
				bool live = !c->removed && c->state == CH_OPEN && ag->session;
				if (c->collect) {
					size_t k = (size_t)n;
					if (k > SM_COLLECT_BUF_BYTES - c->clen)
						k = SM_COLLECT_BUF_BYTES - c->clen; /* cannot happen: clen only shrank */
					memcpy(c->cbuf + c->clen, w->buf, k);
					c->clen += (uint32_t)k;
					collect_flush(ag, c);
				} else if (live) {
					/* the read was sized within the credit, which has only grown since */
					send_data(ag, c->id, w->buf, (size_t)n);
					c->credit -= (uint64_t)n < c->credit ? (uint64_t)n : c->credit;
				}
			} else if (n <= 0 && c->rw.fd >= 0) {
				chan_read_eof(ag, c);
			}
			if (c->proc && c->proc->exited)
				proc_check_done(ag, c->proc);
			chan_maybe_release(ag, c);
		}
		pthread_mutex_lock(&ag->rd.mu);
		w->busy = false;
		w->detached = false;
		w->c = NULL;
		pthread_mutex_unlock(&ag->rd.mu);
		/* a worker is free again: channels that found none may read again */
		for (int k = 0; k < SM_MAX_CHANNELS; k++)
			if (ag->chans[k].r_stuck && !ag->chans[k].rd)
				ag->chans[k].r_stuck = false;
	}
}

/* ------------------------------------------------------------------ processes */

static struct proc *proc_alloc(struct agent *ag)
{
	for (int i = 0; i < SM_MAX_PROCS; i++)
		if (!ag->procs[i].used) {
			struct proc *p = &ag->procs[i];
			memset(p, 0, sizeof(*p));
			p->used = true;
			p->pty = -1;
			p->sess = ag->sess;
			return p;
		}
	return NULL;
}

static struct proc *proc_by_pid(struct agent *ag, pid_t pid)
{
	for (int i = 0; i < SM_MAX_PROCS; i++)
		if (ag->procs[i].used && ag->procs[i].pid == pid)
			return &ag->procs[i];
	return NULL;
}

static void strv_free(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}

static void spec_free(struct child_spec *s)
{
	if (!s)
		return;
	strv_free(s->argv);
	strv_free(s->envp);
	free(s->cwd);
	free(s);
}

static void proc_free(struct proc *p)
{
	if (p->pty >= 0)
		close(p->pty);
	spec_free(p->chain);
	memset(p, 0, sizeof(*p));
	p->pty = -1;
}

static void write_all_fd(int fd, const char *s)
{
	size_t n = strlen(s);
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static const char *env_lookup(char **envp, const char *key)
{
	size_t kl = strlen(key);
	for (char **e = envp; e && *e; e++)
		if (!strncmp(*e, key, kl) && (*e)[kl] == '=')
			return *e + kl + 1;
	return NULL;
}

/* In the child: never returns. */
static int close_fds_from(unsigned first)
{
#ifdef SYS_close_range
	return (int)syscall(SYS_close_range, first, ~0U, 0U);
#else
	(void)first;
	errno = ENOSYS;
	return -1;
#endif
}

static void child_exec(int eg_fd, struct child_spec *s, int in, int out, int err, bool tty, int slave)
{
	/* into the work cgroup (task cap, low CPU weight against the agent); best effort */
	if (sm_work_cgroup_fd >= 0 && write(sm_work_cgroup_fd, "0", 1) < 0) {
		/* nothing useful to report from the child */
	}
	/* egress trap (SPEC 6.5): while still root, before anything of the command runs */
	if (eg_fd >= 0)
		eg_child_install(eg_fd);
	/* Handlers back to default before any signal is unblocked: with spawn_child's shared
	 * address space a handler must never run in the child. */
	for (int sig = 1; sig < 32; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	if (tty) {
		setsid();
		ioctl(slave, TIOCSCTTY, 0);
		in = out = err = slave;
	} else {
		setpgid(0, 0);
	}
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		_exit(126);
	/* The agent protects itself with oom_score_adj -1000, which children inherit: undo it, or the
	 * OOM killer could never pick a runaway command and the whole guest would thrash instead. */
	int oom = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (oom >= 0) {
		if (write(oom, "0", 1) < 0) {
			/* best effort: nothing useful to report from the child */
		}
		close(oom);
	}
	/* belt and braces: everything is O_CLOEXEC already. One close_range syscall instead of a
	 * thousand close() calls: under TCG every syscall is expensive and this is on the exec path. */
	if (close_fds_from(3) < 0)
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
	if (s->user.uid != 0 || s->user.gid != 0 || s->user.ngroups > 1) {
		gid_t groups[SM_MAX_GROUPS];
		for (int i = 0; i < s->user.ngroups; i++)
			groups[i] = s->user.groups[i];
		/* Raw system calls, which change exactly this process: libc's set*id may broadcast the
		 * change to every thread it knows of, and a spawn_child child shares the agent's
		 * memory, so that list would name the agent's threads. */
		if (syscall(SYS_setgroups, (long)s->user.ngroups, groups) < 0 ||
		    syscall(SYS_setgid, (long)s->user.gid) < 0 || syscall(SYS_setuid, (long)s->user.uid) < 0) {
			write_all_fd(2, "sm-agent: cannot switch user\n");
			_exit(126);
		}
	}
	if (chdir(s->cwd ? s->cwd : "/") < 0) {
		write_all_fd(2, "sm-agent: cannot change directory\n");
		_exit(126);
	}
	const char *a0 = s->argv[0];
	int saved = ENOENT;
	if (strchr(a0, '/')) {
		execve(a0, s->argv, s->envp);
		saved = errno;
	} else {
		const char *path = env_lookup(s->envp, "PATH");
		if (!path)
			path = DEFAULT_PATH;
		char buf[4096 + 256];
		bool eacces = false;
		while (*path) {
			const char *colon = strchr(path, ':');
			size_t dl = colon ? (size_t)(colon - path) : strlen(path);
			if (dl + strlen(a0) + 2 < sizeof(buf)) {
				if (dl == 0)
					snprintf(buf, sizeof(buf), "%s", a0);
				else
					snprintf(buf, sizeof(buf), "%.*s/%s", (int)dl, path, a0);
				/* A failed execve is expensive (the kernel sets up a new mm and copies argv and
				 * the environment before it looks the file up; under TCG ~0.5 ms each), and a
				 * bare name usually misses in most PATH entries: skip the ones where the file
				 * does not exist with a plain lookup first. */
				if (access(buf, F_OK) == 0 || (errno != ENOENT && errno != ENOTDIR))
					execve(buf, s->argv, s->envp);
				if (errno == EACCES)
					eacces = true;
				else if (errno != ENOENT && errno != ENOTDIR) {
					saved = errno;
					break;
				}
			}
			if (!colon)
				break;
			path = colon + 1;
		}
		if (saved == ENOENT && eacces)
			saved = EACCES;
	}
	char msg[512];
	if (saved == ENOENT || saved == ENOTDIR) {
		snprintf(msg, sizeof(msg), "sm-agent: %.400s: command not found\n", a0);
		write_all_fd(2, msg);
		_exit(127);
	}
	snprintf(msg, sizeof(msg), "sm-agent: %.400s: %s\n", a0, strerror(saved));
	write_all_fd(2, msg);
	_exit(126);
}

struct spawn_req {
	struct child_spec *s;
	int in, out, err, slave;
	bool tty, new_session;
	int eg_fd; /* egress trap (-1: none) */
};

static int spawn_main(void *arg)
{
	struct spawn_req *r = arg;
	if (r->new_session)
		setsid();
	child_exec(r->eg_fd, r->s, r->in, r->out, r->err, r->tty, r->slave);
	_exit(127);
}

/* Start one child process that runs child_exec. Without an attached share this is a vfork-style
 * clone (CLONE_VM | CLONE_VFORK): no page tables are copied and nothing is copied on write, which
 * under TCG makes a command start several times cheaper than fork(). The agent is suspended
 * until the child has called execve or exited, so with a share attached, where that exec or the
 * chdir could need a FUSE answer only the agent can relay (SPEC 6.4), a plain fork is used. */
static pid_t spawn_child(struct agent *ag, struct child_spec *s, int in, int out, int err, bool tty, int slave, bool new_session)
{
	struct spawn_req r = {.s = s, .in = in, .out = out, .err = err, .slave = slave, .tty = tty,
			      .new_session = new_session, .eg_fd = ag->eg_child_fd};
	if (any_share(ag)) {
		pid_t pid = fork();
		if (pid == 0)
			spawn_main(&r);
		return pid;
	}
	/* The child runs on this buffer while this thread is suspended; no signal may be handled
	 * meanwhile on the shared memory, so all are blocked until the child has exec'd. */
	static _Alignas(16) uint8_t stack[64 * 1024];
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pid_t pid = clone(spawn_main, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, &r);
	int e = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = e;
	return pid;
}

/* Build "K=V" arrays: base environment + overrides from a CBOR map. */
static char **build_env(struct agent *ag, const struct cb_doc *d, int envmap)
{
	char **base = ag->cfg->has_workload ? ag->cfg->wl_env : NULL;
	size_t nb = 0;
	for (char **e = base; e && *e; e++)
		nb++;
	size_t no = envmap >= 0 ? d->items[envmap].count : 0;
	char **v = calloc(nb + no + 3, sizeof(char *));
	if (!v)
		return NULL;
	size_t n = 0;
	if (base) {
		for (size_t i = 0; i < nb; i++)
			if (!(v[n++] = strdup(base[i])))
				goto fail;
	} else {
		if (!(v[n++] = strdup("PATH=" DEFAULT_PATH)) || !(v[n++] = strdup("HOME=/root")))
			goto fail;
	}
	if (envmap >= 0) {
		uint32_t k = (uint32_t)envmap + 1;
		for (size_t i = 0; i < no; i++) {
			uint32_t val = d->items[k].next;
			uint32_t kl = d->items[k].len, vl = d->items[val].len;
			char *kv = malloc((size_t)kl + vl + 2);
			if (!kv)
				goto fail;
			memcpy(kv, cb_ptr(d, k), kl);
			kv[kl] = '=';
			memcpy(kv + kl + 1, cb_ptr(d, val), vl);
			kv[kl + 1 + vl] = 0;
			size_t j;
			for (j = 0; j < n; j++)
				if (!strncmp(v[j], kv, (size_t)kl + 1))
					break;
			if (j < n) {
				free(v[j]);
				v[j] = kv;
			} else {
				v[n++] = kv;
			}
			k = d->items[val].next;
		}
	}
	if (!env_lookup(v, "PATH") && !(v[n++] = strdup("PATH=" DEFAULT_PATH)))
		goto fail;
	v[n] = NULL;
	return v;
fail:
	strv_free(v);
	return NULL;
}

static char *item_strdup(const struct cb_doc *d, int i)
{
	return strndup((const char *)cb_ptr(d, (uint32_t)i), d->items[i].len);
}

static bool any_share(struct agent *ag);

/* Whether path lies (lexically) at or below a FUSE mount. PID 1 must not touch such a path
 * itself: the FUSE requests it would cause are relayed by PID 1 (SPEC 6.4), so it would wait
 * for itself. A symlink elsewhere that points into a share is not detected. */
static int contains_path(const char *mp, const char *type, const char *src, void *ctx)
{
	(void)src;
	const char *path = ctx;
	if (strncmp(type, "fuse", 4) != 0)
		return 0;
	size_t n = strlen(mp);
	while (n > 1 && mp[n - 1] == '/')
		n--;
	return n > 1 && !strncmp(path, mp, n) && (path[n] == 0 || path[n] == '/');
}

static bool on_share(struct agent *ag, const char *path)
{
	return any_share(ag) && fs_mountinfo_each(contains_path, (void *)path) == 1;
}

/* fs_binds_prune: a remembered bind below any FUSE mount (a lookup there could wait on a
 * FUSE server, maybe PID 1 itself) or at the attach's own path is not made again. */
static bool rebind_skip(const char *p, void *attach_path)
{
	return (attach_path && !strcmp(p, attach_path)) || fs_mountinfo_each(contains_path, (void *)p) == 1;
}

/* Materialise argv/env/cwd/user of a command; errors filled as (code, msg). */
static struct child_spec *build_spec(struct agent *ag, const struct cb_doc *d, const struct cmd_args *c, const char **code,
				     char *msg, size_t msglen)
{
	struct child_spec *s = calloc(1, sizeof(*s));
	if (!s)
		goto nomem;
	uint32_t argc = d->items[c->argv].count;
	s->argv = calloc((size_t)argc + 1, sizeof(char *));
	if (!s->argv)
		goto nomem;
	uint32_t k = (uint32_t)c->argv + 1;
	for (uint32_t i = 0; i < argc; i++) {
		if (!(s->argv[i] = item_strdup(d, (int)k)))
			goto nomem;
		k = d->items[k].next;
	}
	if (!(s->envp = build_env(ag, d, c->env)))
		goto nomem;
	s->cwd = c->cwd >= 0 ? item_strdup(d, c->cwd) : strdup("/");
	if (!s->cwd)
		goto nomem;
	struct stat st;
	/* While a share is attached the cwd is checked by the child's chdir (exit 126), never by
	 * PID 1: a guest-made symlink could lead the stat into a share (see the file jobs). */
	if (!any_share(ag) && (stat(s->cwd, &st) < 0 || !S_ISDIR(st.st_mode))) {
		*code = errno == ENOENT || !errno ? "ENOENT" : errno_code(errno);
		if (stat(s->cwd, &st) == 0)
			*code = "ENOTDIR";
		snprintf(msg, msglen, "cwd %.300s: does not exist or is not a directory", s->cwd);
		spec_free(s);
		return NULL;
	}
	char user[256] = "0:0";
	if (c->user >= 0) {
		memcpy(user, cb_ptr(d, (uint32_t)c->user), d->items[c->user].len);
		user[d->items[c->user].len] = 0;
	}
	char err[256];
	if (resolve_user("", user, &s->user, err, sizeof(err)) < 0) {
		*code = "EINVAL";
		snprintf(msg, msglen, "user: %s", err);
		spec_free(s);
		return NULL;
	}
	return s;
nomem:
	spec_free(s);
	*code = "ENOMEM";
	snprintf(msg, msglen, "out of memory");
	return NULL;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Fork one command. Returns pid or -errno; outfd, errfd, infd get the parent's
 * ends (nonblocking, cloexec), -1 where not requested. */
static pid_t start_child(struct agent *ag, struct child_spec *s, bool tty, uint16_t cols, uint16_t rows, bool want_in,
			 int *outfd, int *errfd, int *infd, int *ptyfd)
{
	int po[2] = {-1, -1}, pe[2] = {-1, -1}, pi[2] = {-1, -1};
	int master = -1, slave = -1, nul = -1;
	*outfd = *errfd = *infd = *ptyfd = -1;
	if (tty) {
		master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
			goto fail;
		char name[64];
		if (ptsname_r(master, name, sizeof(name)) != 0)
			goto fail;
		slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (slave < 0)
			goto fail;
		struct winsize ws = {.ws_row = rows, .ws_col = cols};
		ioctl(master, TIOCSWINSZ, &ws);
	} else {
		if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0)
			goto fail;
		if (want_in) {
			if (pipe2(pi, O_CLOEXEC) < 0)
				goto fail;
		} else {
			nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
			if (nul < 0)
				goto fail;
		}
	}
	pid_t pid = spawn_child(ag, s, want_in ? pi[0] : nul, po[1], pe[1], tty, slave, false);
	if (pid < 0)
		goto fail;
	if (tty) {
		close(slave);
		set_nonblock(master);
		*outfd = master;
		*ptyfd = fcntl(master, F_DUPFD_CLOEXEC, 3);
		if (want_in)
			*infd = fcntl(master, F_DUPFD_CLOEXEC, 3);
	} else {
		close(po[1]);
		close(pe[1]);
		set_nonblock(po[0]);
		set_nonblock(pe[0]);
		*outfd = po[0];
		*errfd = pe[0];
		if (want_in) {
			close(pi[0]);
			set_nonblock(pi[1]);
			*infd = pi[1];
		} else {
			close(nul);
		}
	}
	return pid;
fail:;
	int e = errno ? errno : EIO;
	int fds[] = {po[0], po[1], pe[0], pe[1], pi[0], pi[1], master, slave, nul};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return -e;
}

static int mkdir_parents(const char *path)
{
	char tmp[SM_PATH_MAX_BYTES + 1];
	size_t n = strlen(path);
	if (n >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, path, n + 1);
	char *last = strrchr(tmp, '/');
	if (!last || last == tmp)
		return 0;
	*last = 0;
	for (char *p = tmp + 1;; p++) {
		if (*p == '/' || *p == 0) {
			char c = *p;
			*p = 0;
			if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
				return -errno;
			*p = c;
			if (!c)
				break;
		}
	}
	return 0;
}

static int write_whole(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* stage: plain create/truncate (SPEC 6); write-file: temp + rename (atomic). */
static int put_file(const char *path, const uint8_t *data, size_t len, mode_t mode, bool mkdirs, bool atomic,
		    uint32_t seq)
{
	int r;
	if (mkdirs && (r = mkdir_parents(path)) < 0)
		return r;
	struct stat st;
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return -EISDIR;
	char tmp[SM_PATH_MAX_BYTES + 64];
	const char *target = path;
	if (atomic) {
		const char *slash = strrchr(path, '/');
		snprintf(tmp, sizeof(tmp), "%.*s/.sm-tmp-%d-%u", (int)(slash - path), path, (int)getpid(), seq);
		target = tmp;
	}
	int fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0)
		return -errno;
	r = write_whole(fd, data, len);
	if (r == 0 && fchmod(fd, mode & 07777) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && atomic && rename(target, path) < 0)
		r = -errno;
	if (r < 0 && atomic)
		unlink(target);
	return r;
}

/* ------------------------------------------------------------------ guarded file operations */

/* PID 1 must never wait on a FUSE request it relays itself. The mkdir/mount/umount of fs-attach and
 * fs-detach therefore run in a forked child that reports through a pipe; PID 1 waits at most
 * FS_HELPER_TIMEOUT_MS and then kills it (a FUSE wait is killable; the unread request is dropped).
 * (write-file, read-file and stage do not wait at all while a share is attached: see the
 * asynchronous file jobs.) Returns the number of bytes the child wrote (<= cap), -ETIMEDOUT, -EFBIG
 * or -errno. */
typedef void (*guard_fn)(void *ctx, int wr);

static void pipe_put(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		b += w;
		n -= (size_t)w;
	}
}

static ssize_t guarded_fork(guard_fn fn, void *ctx, uint8_t *out, size_t cap)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(pfd[0]);
		close(pfd[1]);
		return -e;
	}
	if (pid == 0) {
		close(pfd[0]);
		fn(ctx, pfd[1]);
		_exit(0);
	}
	close(pfd[1]);
	int64_t end = mono_ms() + FS_HELPER_TIMEOUT_MS;
	size_t got = 0;
	ssize_t r = -ETIMEDOUT;
	for (;;) {
		int64_t left = end - mono_ms();
		if (left <= 0)
			break;
		struct pollfd pf = {.fd = pfd[0], .events = POLLIN};
		int pr = poll(&pf, 1, (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			break;
		uint8_t extra;
		/* at cap, one more byte tells EOF (the answer was exactly cap bytes) from an overflow */
		ssize_t n = got == cap ? read(pfd[0], &extra, 1) : read(pfd[0], out + got, cap - got);
		if (n > 0 && got == cap) {
			r = -EFBIG;
			break;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0) {
			r = (ssize_t)got;
			break;
		}
		got += (size_t)n;
	}
	close(pfd[0]);
	if (r < 0)
		kill(pid, SIGKILL); /* reap() collects it */
	return r;
}

struct put_ctx {
	const char *path;
	const uint8_t *data;
	size_t len;
	mode_t mode;
	bool mkdirs, atomic;
	uint32_t seq;
};

static void put_child(void *c, int wr)
{
	struct put_ctx *x = c;
	int r = put_file(x->path, x->data, x->len, x->mode, x->mkdirs, x->atomic, x->seq);
	pipe_put(wr, &r, sizeof(r));
}

/* Write the stage files. Runs in PID 1 only while no share is attached; otherwise in a file job's
 * child (stage_child), so a path on (or leading into) a share never makes PID 1 wait on itself. */
static int do_stage(const struct cb_doc *d, int stage, char *msg, size_t msglen)
{
	if (stage < 0)
		return 0;
	uint32_t k = (uint32_t)stage + 1;
	for (uint32_t i = 0; i < d->items[stage].count; i++) {
		int pi = cb_map_get(d, k, "path"), di = cb_map_get(d, k, "data");
		int mi = cb_map_get(d, k, "mode");
		mode_t mode = mi >= 0 && d->items[mi].type == CB_UINT ? (mode_t)(d->items[mi].u & 07777) : 0644;
		char *path = item_strdup(d, pi);
		if (!path)
			return -ENOMEM;
		int r = put_file(path, cb_ptr(d, (uint32_t)di), d->items[di].len, mode, true, false, 0);
		if (r < 0) {
			snprintf(msg, msglen, "stage %.300s: %s", path, strerror(-r));
			free(path);
			return r;
		}
		free(path);
		k = d->items[k].next;
	}
	return 0;
}

static bool ids_fresh(struct agent *ag, const uint32_t *ids, int n)
{
	for (int i = 0; i < n; i++)
		if (ids[i] <= ag->last_ch)
			return false;
	return true;
}

static void ids_commit(struct agent *ag, const uint32_t *ids, int n)
{
	for (int i = 0; i < n; i++)
		if (ids[i] > ag->last_ch)
			ag->last_ch = ids[i];
}

static void kill_group(pid_t pid)
{
	if (pid > 1) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
	}
}

/* An exec whose stage files a file job is writing (a share is attached); launched when it is done. */
struct exec_cont {
	struct exec_args a;
	bool spawn;
	struct proc *p;
	struct child_spec *s;
};

static void exec_cont_free(struct exec_cont *k)
{
	if (!k)
		return;
	spec_free(k->s);
	proc_free(k->p);
	free(k);
}

struct stage_ctx {
	const struct cb_doc *d;
	int stage;
};

struct stage_out {
	int32_t r;
	char msg[512];
};

static void stage_child(void *c, int wr)
{
	struct stage_ctx *x = c;
	struct stage_out out;
	memset(&out, 0, sizeof(out));
	out.r = do_stage(x->d, x->stage, out.msg, sizeof(out.msg));
	pipe_put(wr, &out, sizeof(out));
}

static void fjob_start(struct agent *ag, uint32_t id, guard_fn fn, void *ctx, char *path, enum fjob_kind kind, size_t cap,
		       size_t limit, struct exec_cont *cont);
static void exec_launch(struct agent *ag, uint32_t id, const struct exec_args *a, bool spawn, struct proc *p, struct child_spec *s);

static void op_exec(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args, bool spawn)
{
	struct exec_args a;
	const char *code = "EINVAL";
	char msg[512];
	if (args_exec(d, args, spawn, &a, &code, msg, sizeof(msg)) < 0) {
		res_error(ag, id, code, msg);
		return;
	}
	uint32_t ids[3] = {a.ch_out};
	int nids = 1;
	if (a.has_ch_err)
		ids[nids++] = a.ch_err;
	if (spawn)
		ids[nids++] = a.ch_in;
	if (!ids_fresh(ag, ids, nids)) {
		res_error(ag, id, "EINVAL", "chOut: channel ids must be greater than every id used before");
		return;
	}
	ids_commit(ag, ids, nids);
	if (chan_free_slots(ag) < nids) {
		res_error(ag, id, "EBUSY", "too many open channels");
		return;
	}
	struct proc *p = proc_alloc(ag);
	if (!p) {
		res_error(ag, id, "EBUSY", "too many processes");
		return;
	}
	/* Stage files first: the command's (or the chained command's) cwd may be a directory
	 * that only exists once the staged files have been written. While a share is attached the
	 * specs do not check cwd (the child's chdir does), so they are built first and the stage
	 * runs in a file job; the command starts when the job is done. */
	bool async_stage = a.stage >= 0 && any_share(ag);
	int r = async_stage ? 0 : do_stage(d, a.stage, msg, sizeof(msg));
	if (r < 0) {
		proc_free(p);
		res_error(ag, id, errno_code(-r), msg);
		return;
	}
	struct child_spec *s = build_spec(ag, d, &a.cmd, &code, msg, sizeof(msg));
	if (!s) {
		proc_free(p);
		res_error(ag, id, code, msg);
		return;
	}
	if (a.chain >= 0) {
		p->chain = build_spec(ag, d, &a.chain_cmd, &code, msg, sizeof(msg));
		if (!p->chain) {
			spec_free(s);
			proc_free(p);
			res_error(ag, id, code, msg);
			return;
		}
	}
	if (async_stage) {
		struct exec_cont *k = malloc(sizeof(*k));
		char *what = strdup("stage");
		if (!k || !what) {
			free(k);
			free(what);
			spec_free(s);
			proc_free(p);
			res_error(ag, id, "ENOMEM", "out of memory");
			return;
		}
		*k = (struct exec_cont){.a = a, .spawn = spawn, .p = p, .s = s};
		struct stage_ctx x = {d, a.stage};
		fjob_start(ag, id, stage_child, &x, what, FJ_STAGE, sizeof(struct stage_out), 0, k);
		return;
	}
	exec_launch(ag, id, &a, spawn, p, s);
}

/* Start the command of an exec/spawn request and wire its channels; takes p and s. */
static void exec_launch(struct agent *ag, uint32_t id, const struct exec_args *ap, bool spawn, struct proc *p, struct child_spec *s)
{
	const struct exec_args a = *ap;
	if (chan_free_slots(ag) < (a.has_ch_err ? 2 : 1) + (spawn ? 1 : 0)) {
		spec_free(s);
		proc_free(p);
		res_error(ag, id, "EBUSY", "too many open channels");
		return;
	}
	int outfd, errfd, infd, ptyfd;
	pid_t pid = start_child(ag, s, a.tty, a.cols, a.rows, spawn, &outfd, &errfd, &infd, &ptyfd);
	spec_free(s);
	if (pid < 0) {
		proc_free(p);
		res_errno(ag, id, (int)-pid, "start process");
		return;
	}
	p->pid = pid;
	p->kind = spawn ? PK_SPAWN : PK_EXEC;
	p->tty = a.tty;
	p->pty = ptyfd;
	struct chan *co = chan_alloc(ag, a.ch_out);
	co->proc = p;
	co->out_open = true;
	co->rw.fd = outfd;
	p->out = co;
	if (a.has_ch_err) {
		struct chan *ce = chan_alloc(ag, a.ch_err);
		ce->proc = p;
		ce->out_open = true;
		ce->rw.fd = errfd;
		p->err = ce;
	} else if (errfd >= 0) {
		close(errfd);
	}
	if (spawn) {
		struct chan *ci = chan_alloc(ag, a.ch_in);
		ci->proc = p;
		ci->in_open = true;
		ci->ww.fd = infd;
		ci->tty_in = a.tty;
		p->in = ci;
		res_begin(ag, id, 1);
		kv_uint(ag, "pid", (uint64_t)pid);
		fend(ag);
	} else {
		p->pending = true;
		p->req_id = id;
		ag->pending[ag->npending++] = id;
		if (a.timeout_ms)
			p->deadline = mono_ms() + (int64_t)(a.timeout_ms > (1ull << 40) ? (1ull << 40) : a.timeout_ms);
		co->collect = true;
		co->cbuf = malloc(SM_COLLECT_BUF_BYTES);
		if (p->err) {
			p->err->collect = true;
			p->err->cbuf = malloc(SM_COLLECT_BUF_BYTES);
		}
		if (!co->cbuf || (p->err && !p->err->cbuf)) {
			/* cannot collect: kill and report */
			kill_group(pid);
			p->cancelled = true;
		}
	}
}

static void exec_finish(struct agent *ag, struct proc *p)
{
	struct chan *o = p->out, *e = p->err;
	if (p->pending && ag->session && p->sess == ag->sess) {
		res_begin(ag, p->req_id, 6);
		if (p->timed_out || p->cancelled) {
			cbe_text(&ag->outq, "exitCode");
			cbe_int(&ag->outq, -1);
			cbe_text(&ag->outq, "signal");
			cbe_uint(&ag->outq, SIGKILL);
		} else {
			enc_exit_fields(ag, p);
		}
		cbe_text(&ag->outq, "timedOut");
		cbe_bool(&ag->outq, p->timed_out);
		kv_uint(ag, "peakRssKib", p->peak_rss);
		cbe_text(&ag->outq, "stdout");
		if (o && o->cbuf && !o->removed)
			cbe_bytes(&ag->outq, o->cbuf, o->clen);
		else
			cbe_bytes(&ag->outq, "", 0);
		cbe_text(&ag->outq, "stderr");
		if (e && e->cbuf && !e->removed)
			cbe_bytes(&ag->outq, e->cbuf, e->clen);
		else
			cbe_bytes(&ag->outq, "", 0);
		if (!fend(ag))
			res_error(ag, p->req_id, "EIO", "result too large");
	}
	if (p->pending)
		pending_del(ag, p->req_id);
	p->pending = false;
	if (o)
		chan_release(ag, o);
	if (e)
		chan_release(ag, e);
	proc_free(p);
}

/* After exit: drain pipes until they would block, then close them. */
static bool drain_after_exit(struct agent *ag, struct chan *c)
{
	if (!c || c->rw.fd < 0 || c->r_eof)
		return true;
	c->r_blocked = false;
	bool done = chan_pump(ag, c, 1 << 20);
	if (!done)
		return false; /* waiting for credit */
	/* A read still under way on a worker thread (guarded_read, a share is attached) is not
	 * "would block": its bytes are still to come, and rd_collect checks the process again when
	 * they arrive. Taking it for the end lost the tail of the output under load. */
	if (c->r_stuck)
		return false;
	if (!c->r_eof)
		chan_read_eof(ag, c); /* would block: a descendant holds the pipe; stop here */
	return true;
}

static void start_chain(struct agent *ag, struct proc *p)
{
	struct child_spec *s = p->chain;
	p->chain = NULL;
	int outfd, errfd, infd, ptyfd;
	pid_t pid = start_child(ag, s, p->tty, 80, 24, false, &outfd, &errfd, &infd, &ptyfd);
	if (p->tty && p->pty >= 0 && ptyfd >= 0) {
		struct winsize ws;
		if (ioctl(p->pty, TIOCGWINSZ, &ws) == 0)
			ioctl(ptyfd, TIOCSWINSZ, &ws);
	}
	spec_free(s);
	if (pid < 0) {
		/* report as a failed start of the chained command */
		p->status = 126 << 8;
		return;
	}
	if (p->pty >= 0)
		close(p->pty);
	p->pty = ptyfd;
	p->pid = pid;
	p->exited = false;
	p->status = 0;
	if (p->out) {
		watch_close(ag, &p->out->rw);
		p->out->rw.fd = outfd;
		p->out->r_eof = false;
	} else if (outfd >= 0)
		close(outfd);
	if (p->err) {
		watch_close(ag, &p->err->rw);
		p->err->rw.fd = errfd;
		p->err->r_eof = false;
	} else if (errfd >= 0)
		close(errfd);
}

static void proc_check_done(struct agent *ag, struct proc *p)
{
	if (!p->used || !p->exited)
		return;
	if (p->kind == PK_WORKLOAD) {
		proc_free(p);
		return;
	}
	if (!drain_after_exit(ag, p->out) || !drain_after_exit(ag, p->err))
		return;
	if (p->kind == PK_EXEC) {
		bool ok = WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
		if (p->chain && ok && !p->timed_out && !p->cancelled) {
			start_chain(ag, p);
			if (!p->exited)
				return; /* the chained command runs; finish when it exits */
		}
		exec_finish(ag, p);
		return;
	}
	/* spawn */
	if (p->chain) {
		bool ok = WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
		if (ok) {
			start_chain(ag, p);
			if (!p->exited)
				return;
		} else {
			spec_free(p->chain);
			p->chain = NULL;
		}
	}
	if (p->in && !p->in->removed && p->in->state == CH_OPEN && p->in->in_open)
		chan_send_close(ag, p->in);
	if (p->in) {
		watch_close(ag, &p->in->ww);
		p->in->proc = NULL;
		chan_maybe_release(ag, p->in);
		p->in = NULL;
	}
	if (ag->session) {
		evt_begin(ag, "exit", 5);
		kv_uint(ag, "pid", (uint64_t)p->pid);
		enc_exit_fields(ag, p);
		cbe_text(&ag->outq, "timedOut");
		cbe_bool(&ag->outq, false);
		kv_uint(ag, "peakRssKib", p->peak_rss);
		fend(ag);
	}
	if (p->out) {
		p->out->proc = NULL;
		chan_maybe_release(ag, p->out);
	}
	if (p->err) {
		p->err->proc = NULL;
		chan_maybe_release(ag, p->err);
	}
	proc_free(p);
}

static void workload_start(struct agent *ag)
{
	struct sm_config *c = ag->cfg;
	if (!c->has_workload || ag->wl_started)
		return;
	ag->wl_started = true;
	struct child_spec s;
	memset(&s, 0, sizeof(s));
	char err[256];
	if (resolve_user("", c->wl_user, &s.user, err, sizeof(err)) < 0) {
		sm_log("workload: %s", err);
		return;
	}
	s.argv = c->wl_argv;
	s.envp = c->wl_env;
	if (!env_lookup(s.envp, "PATH")) {
		/* SPEC 6: default PATH when the environment has none */
		size_t n = 0;
		while (c->wl_env[n])
			n++;
		char **ne = realloc(c->wl_env, (n + 2) * sizeof(char *));
		if (ne) {
			ne[n] = strdup("PATH=" DEFAULT_PATH);
			ne[n + 1] = NULL;
			c->wl_env = ne;
			if (!ne[n])
				ne[n] = NULL;
		}
		s.envp = c->wl_env;
	}
	s.cwd = c->wl_cwd;
	int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	/* new session; child_exec's setpgid is then a no-op, and the console stays 1/2 */
	pid_t pid = spawn_child(ag, &s, nul, 1, 2, false, -1, true);
	if (nul >= 0)
		close(nul);
	if (pid < 0) {
		sm_log("workload: fork: %s", strerror(errno));
		return;
	}
	ag->wl_pid = pid;
	struct proc *p = proc_alloc(ag);
	if (p) {
		p->kind = PK_WORKLOAD;
		p->pid = pid;
	}
	ag->next_listen_poll = mono_ms();
	ag->listen_interval = SM_LISTEN_POLL_MS;
}

/* ------------------------------------------------------------------ listening */

static bool port_listening(const char *file, uint32_t port)
{
	FILE *f = fopen(file, "re");
	if (!f)
		return false;
	char line[512];
	bool found = false;
	if (!fgets(line, sizeof(line), f)) {
		fclose(f);
		return false;
	}
	while (!found && fgets(line, sizeof(line), f)) {
		/* "  0: 00000000:0050 00000000:0000 0A ..." local_address is addr:port hex */
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		char *local = colon + 1;
		while (*local == ' ')
			local++;
		char *pc = strchr(local, ':');
		if (!pc)
			continue;
		unsigned long lp = strtoul(pc + 1, NULL, 16);
		char *st = strchr(pc + 1, ' ');
		if (!st)
			continue;
		st = strchr(st + 1, ' ');
		if (!st)
			continue;
		unsigned long state = strtoul(st + 1, NULL, 16);
		if (lp == port && state == 0x0a)
			found = true;
	}
	fclose(f);
	return found;
}

static void send_listening(struct agent *ag)
{
	if (!ag->session || ag->listening_reported)
		return;
	evt_begin(ag, "listening", 1);
	kv_uint(ag, "port", ag->cfg->guest_port);
	fend(ag);
	ag->listening_reported = true;
}

static void listen_poll(struct agent *ag, int64_t now)
{
	if (ag->listening_seen || !ag->cfg->guest_port || !(ag->cfg->listener_required || ag->wl_started))
		return;
	if (now < ag->next_listen_poll)
		return;
	/* Fast at first (a server usually listens within a second), then backing off: a workload
	 * that never listens (a shell, a batch job) must not keep an idle VM reading /proc/net
	 * twenty times a second — under TCG that alone was ~7% of a core per VM. */
	if (ag->listen_interval < SM_LISTEN_POLL_MS)
		ag->listen_interval = SM_LISTEN_POLL_MS;
	ag->next_listen_poll = now + ag->listen_interval;
	ag->listen_interval = ag->listen_interval * 3 / 2;
	if (ag->listen_interval > SM_LISTEN_POLL_MAX_MS)
		ag->listen_interval = SM_LISTEN_POLL_MAX_MS;
	if (port_listening("/proc/net/tcp", ag->cfg->guest_port) ||
	    port_listening("/proc/net/tcp6", ag->cfg->guest_port)) {
		ag->listening_seen = true;
		send_listening(ag);
	}
}

/* ------------------------------------------------------------------ ops */

static void op_signal(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint64_t pid, sig;
	char msg[256];
	if (args_uint(d, args, "pid", true, 1, INT32_MAX, &pid, msg, sizeof(msg)) < 0 ||
	    args_uint(d, args, "signum", true, 1, 64, &sig, msg, sizeof(msg)) < 0) {
		res_error(ag, id, "EINVAL", msg);
		return;
	}
	struct proc *p = proc_by_pid(ag, (pid_t)pid);
	if (!p || p->kind != PK_SPAWN || p->exited) {
		res_error(ag, id, "ESRCH", "no such process started by spawn");
		return;
	}
	if (kill((pid_t)pid, (int)sig) < 0) {
		res_errno(ag, id, errno, "kill");
		return;
	}
	res_empty(ag, id);
}

static void op_resize(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint64_t pid, cols, rows;
	char msg[256];
	if (args_uint(d, args, "pid", true, 1, INT32_MAX, &pid, msg, sizeof(msg)) < 0 ||
	    args_uint(d, args, "cols", true, 1, 65535, &cols, msg, sizeof(msg)) < 0 ||
	    args_uint(d, args, "rows", true, 1, 65535, &rows, msg, sizeof(msg)) < 0) {
		res_error(ag, id, "EINVAL", msg);
		return;
	}
	struct proc *p = proc_by_pid(ag, (pid_t)pid);
	if (!p || p->kind == PK_WORKLOAD || p->exited) {
		res_error(ag, id, "ESRCH", "no such process");
		return;
	}
	if (!p->tty || p->pty < 0) {
		res_error(ag, id, "EINVAL", "pid: the process has no tty");
		return;
	}
	struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
	if (ioctl(p->pty, TIOCSWINSZ, &ws) < 0) {
		res_errno(ag, id, errno, "TIOCSWINSZ");
		return;
	}
	res_empty(ag, id);
}

static void in_eof(struct agent *ag, struct chan *c)
{
	c->in_eof = true;
	c->in_open = false;
	if (c->ioff == c->ilen)
		chan_in_drained(ag, c);
}

static void op_close_stdin(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint64_t pid;
	char msg[256];
	if (args_uint(d, args, "pid", true, 1, INT32_MAX, &pid, msg, sizeof(msg)) < 0) {
		res_error(ag, id, "EINVAL", msg);
		return;
	}
	struct proc *p = proc_by_pid(ag, (pid_t)pid);
	if (!p || p->kind != PK_SPAWN || p->exited) {
		res_error(ag, id, "ESRCH", "no such process started by spawn");
		return;
	}
	struct chan *c = p->in;
	if (c) {
		/* SPEC 6.3: like eof on chIn, and the stream is gone: tell the host with close.
		 * Bytes already buffered are still delivered before stdin is closed. */
		if (!c->removed && c->state == CH_OPEN && c->in_open) {
			send_chan_frame(ag, "close", c->id);
			c->state = CH_CLOSING;
		}
		in_eof(ag, c);
	}
	res_empty(ag, id);
}

static void op_write_file(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	int pi, di;
	uint64_t mode = 0644;
	bool mkdirs = true;
	char msg[512];
	if (args_path(d, args, "path", &pi, msg, sizeof(msg)) < 0 ||
	    args_bytes(d, args, "data", &di, msg, sizeof(msg)) < 0 ||
	    args_uint(d, args, "mode", false, 0, UINT32_MAX, &mode, msg, sizeof(msg)) < 0 ||
	    args_bool(d, args, "mkdirs", true, &mkdirs, msg, sizeof(msg)) < 0) {
		res_error(ag, id, "EINVAL", msg);
		return;
	}
	if (d->items[di].len > SM_MAX_FILE_BYTES) {
		res_error(ag, id, "SM_FILE_TOO_LARGE", "data: larger than 4194304 bytes");
		return;
	}
	char *path = item_strdup(d, pi);
	if (!path) {
		res_error(ag, id, "ENOMEM", "out of memory");
		return;
	}
	if (any_share(ag)) {
		/* the child has its own copy of the frame's bytes */
		struct put_ctx x = {path, cb_ptr(d, (uint32_t)di), d->items[di].len, (mode_t)(mode & 07777), mkdirs, true,
				     ++ag->tmp_counter};
		fjob_start(ag, id, put_child, &x, path, FJ_WRITE, sizeof(int), 0, NULL);
		return;
	}
	int r = put_file(path, cb_ptr(d, (uint32_t)di), d->items[di].len, (mode_t)(mode & 07777), mkdirs, true,
			 ++ag->tmp_counter);
	if (r < 0)
		res_errno(ag, id, -r, path);
	else
		res_empty(ag, id);
	free(path);
}

/* read-file: load_file reads the file (<= limit bytes), reply_loaded answers. While a share is
 * attached the load runs in a file job's child (see fjob_start), which sends
 * {int32 rc, uint32 mode, uint32 len} + the bytes. */
enum { LF_NOTREG = 1, LF_TOOBIG = 2, LF_GREW = 3 };

static size_t read_limit(struct agent *ag)
{
	size_t limit = SM_MAX_FILE_BYTES;
	if (ag->host_max_frame - 256 < limit)
		limit = ag->host_max_frame - 256;
	return limit;
}

/* 0 with *buf (malloc'd) / *got / *mode, -errno, or one of LF_*. */
static int load_file(const char *path, size_t limit, uint8_t **buf, size_t *got, mode_t *mode)
{
	*buf = NULL;
	*got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return -e;
	}
	*mode = st.st_mode & 07777;
	int rc = 0;
	if (!S_ISREG(st.st_mode))
		rc = LF_NOTREG;
	else if ((uint64_t)st.st_size > limit)
		rc = LF_TOOBIG;
	/* files may grow between fstat and read: read at most limit + 1 */
	size_t bcap = (size_t)st.st_size + 1 > limit + 1 ? limit + 1 : (size_t)st.st_size + 1;
	uint8_t *b = rc ? NULL : malloc(bcap);
	if (!rc && !b)
		rc = -ENOMEM;
	size_t n_got = 0;
	while (rc == 0) {
		if (n_got == bcap) {
			if (bcap > limit)
				break;
			size_t nc = bcap * 2 > limit + 1 ? limit + 1 : bcap * 2;
			uint8_t *nb = realloc(b, nc);
			if (!nb) {
				rc = -ENOMEM;
				break;
			}
			b = nb;
			bcap = nc;
		}
		ssize_t n = read(fd, b + n_got, bcap - n_got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			rc = -errno;
		if (n <= 0)
			break;
		n_got += (size_t)n;
	}
	close(fd);
	if (rc == 0 && n_got > limit)
		rc = LF_GREW;
	if (rc != 0) {
		free(b);
		return rc;
	}
	*buf = b;
	*got = n_got;
	return 0;
}

static void reply_loaded(struct agent *ag, uint32_t id, const char *path, int rc, const uint8_t *buf, size_t got, mode_t mode,
			 size_t limit)
{
	char msg[512];
	if (rc < 0) {
		res_errno(ag, id, -rc, path);
	} else if (rc == LF_NOTREG) {
		snprintf(msg, sizeof(msg), "%.300s: not a regular file", path);
		res_error(ag, id, "EINVAL", msg);
	} else if (rc == LF_TOOBIG) {
		snprintf(msg, sizeof(msg), "%.300s: larger than %zu bytes", path, limit);
		res_error(ag, id, "SM_FILE_TOO_LARGE", msg);
	} else if (rc == LF_GREW) {
		res_error(ag, id, "SM_FILE_TOO_LARGE", "file grew beyond the limit while reading");
	} else {
		res_begin(ag, id, 2);
		cbe_text(&ag->outq, "data");
		cbe_bytes(&ag->outq, buf, got);
		kv_uint(ag, "mode", mode);
		if (!fend(ag))
			res_error(ag, id, "SM_FILE_TOO_LARGE", "result does not fit in a frame");
	}
}

struct read_ctx {
	const char *path;
	size_t limit;
};

static void read_child(void *c, int wr)
{
	struct read_ctx *x = c;
	uint8_t *buf;
	size_t got;
	mode_t mode = 0;
	int32_t hdr[3];
	hdr[0] = load_file(x->path, x->limit, &buf, &got, &mode);
	hdr[1] = (int32_t)mode;
	hdr[2] = hdr[0] == 0 ? (int32_t)got : 0;
	pipe_put(wr, hdr, sizeof(hdr));
	if (hdr[0] == 0)
		pipe_put(wr, buf, got);
}

/* ------------------------------------------------------------------ asynchronous file jobs */

/* While a share is attached, write-file and read-file run in a forked child that answers through a
 * pipe, and the event loop goes on meanwhile: the child's path may lead into a share (directly or
 * through a guest-made symlink), whose FUSE requests this loop relays. The request is answered
 * when the child has answered, or with EIO after SM_FILE_JOB_TIMEOUT_MS (the child is killed). */

static void fjob_answer(struct agent *ag, struct file_job *j, ssize_t n)
{
	char msg[512];
	if (n == -ETIMEDOUT) {
		snprintf(msg, sizeof(msg), "%.300s: no answer within %d s (a live host share that does not answer?)",
			 j->path, SM_FILE_JOB_TIMEOUT_MS / 1000);
		res_error(ag, j->req_id, "EIO", msg);
		return;
	}
	if (j->kind == FJ_STAGE) {
		struct stage_out out;
		if (n != (ssize_t)sizeof(out)) {
			res_errno(ag, j->req_id, n < 0 ? (int)-n : EIO, "stage");
			return;
		}
		memcpy(&out, j->buf, sizeof(out));
		out.msg[sizeof(out.msg) - 1] = 0;
		if (out.r < 0) {
			res_error(ag, j->req_id, errno_code(-out.r), out.msg);
			return;
		}
		struct exec_cont *k = j->cont;
		j->cont = NULL;
		exec_launch(ag, j->req_id, &k->a, k->spawn, k->p, k->s);
		free(k);
		return;
	}
	if (j->kind == FJ_WRITE) {
		int r;
		if (n != (ssize_t)sizeof(r)) {
			res_errno(ag, j->req_id, n < 0 ? (int)-n : EIO, j->path);
			return;
		}
		memcpy(&r, j->buf, sizeof(r));
		if (r < 0)
			res_errno(ag, j->req_id, -r, j->path);
		else
			res_empty(ag, j->req_id);
		return;
	}
	int32_t hdr[3];
	if (n < (ssize_t)sizeof(hdr)) {
		res_errno(ag, j->req_id, n < 0 ? (int)-n : EIO, j->path);
		return;
	}
	memcpy(hdr, j->buf, sizeof(hdr));
	if (hdr[0] == 0 && (size_t)n - sizeof(hdr) != (size_t)hdr[2])
		res_errno(ag, j->req_id, EIO, j->path); /* the child died mid-answer */
	else
		reply_loaded(ag, j->req_id, j->path, hdr[0], j->buf + sizeof(hdr), (size_t)hdr[2], (mode_t)hdr[1],
			     j->limit);
}

/* n: bytes the child wrote, or -errno / -ETIMEDOUT / -EFBIG. Answers unless the session changed. */
static void fjob_finish(struct agent *ag, struct file_job *j, ssize_t n)
{
	watch_close(ag, &j->w);
	if (n < 0)
		kill(j->pid, SIGKILL); /* reap() collects it */
	if (ag->session && j->sess == ag->sess && pending_has(ag, j->req_id)) {
		pending_del(ag, j->req_id);
		fjob_answer(ag, j, n);
	}
	exec_cont_free(j->cont); /* not launched: failed, or the session changed */
	free(j->buf);
	free(j->path);
	memset(j, 0, sizeof(*j));
	j->w.fd = -1;
}

static void fjob_readable(struct agent *ag, struct file_job *j)
{
	for (;;) {
		uint8_t extra;
		/* at cap, one more byte tells EOF (the answer was exactly cap bytes) from an overflow */
		ssize_t n = j->got == j->cap ? read(j->w.fd, &extra, 1) : read(j->w.fd, j->buf + j->got, j->cap - j->got);
		if (n > 0 && j->got == j->cap) {
			fjob_finish(ag, j, -EFBIG);
			return;
		}
		if (n > 0) {
			j->got += (size_t)n;
			continue;
		}
		if (n == 0) {
			fjob_finish(ag, j, (ssize_t)j->got);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			fjob_finish(ag, j, -errno);
		return;
	}
}

static void fjob_timers(struct agent *ag, int64_t now)
{
	for (int i = 0; i < SM_MAX_FILE_JOBS; i++)
		if (ag->fjobs[i].used && now >= ag->fjobs[i].deadline)
			fjob_finish(ag, &ag->fjobs[i], -ETIMEDOUT);
}

static int64_t fjob_next_deadline(struct agent *ag, int64_t t, int64_t now)
{
	for (int i = 0; i < SM_MAX_FILE_JOBS; i++)
		if (ag->fjobs[i].used && ag->fjobs[i].deadline - now < t)
			t = ag->fjobs[i].deadline - now;
	return t;
}

/* Start fn(ctx, pipe) in a child for request id; the answer comes later (fjob_answer). Takes path. */
static void fjob_start(struct agent *ag, uint32_t id, guard_fn fn, void *ctx, char *path, enum fjob_kind kind, size_t cap,
		       size_t limit, struct exec_cont *cont)
{
	struct file_job *j = NULL;
	for (int i = 0; i < SM_MAX_FILE_JOBS && !j; i++)
		if (!ag->fjobs[i].used)
			j = &ag->fjobs[i];
	int pfd[2] = {-1, -1};
	uint8_t *buf = j ? malloc(cap) : NULL;
	if (!j || !buf || pipe2(pfd, O_CLOEXEC) < 0) {
		int e = !j ? EBUSY : !buf ? ENOMEM : errno;
		res_errno(ag, id, e, !j ? "too many file operations in progress" : path);
		free(buf);
		free(path);
		exec_cont_free(cont);
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(pfd[0]);
		close(pfd[1]);
		res_errno(ag, id, e, "fork");
		free(buf);
		free(path);
		exec_cont_free(cont);
		return;
	}
	if (pid == 0) {
		close(pfd[0]);
		fn(ctx, pfd[1]);
		_exit(0);
	}
	close(pfd[1]);
	set_nonblock(pfd[0]);
	*j = (struct file_job){.used = true, .kind = kind, .cont = cont, .pid = pid, .req_id = id, .sess = ag->sess,
			       .deadline = mono_ms() + SM_FILE_JOB_TIMEOUT_MS, .buf = buf, .cap = cap, .limit = limit,
			       .path = path};
	j->w.kind = W_FJOB;
	j->w.fd = pfd[0];
	j->w.obj = j;
	ag->pending[ag->npending++] = id;
	watch_set(ag, &j->w, EPOLLIN);
}

static void op_read_file(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	int pi;
	char msg[512];
	if (args_path(d, args, "path", &pi, msg, sizeof(msg)) < 0) {
		res_error(ag, id, "EINVAL", msg);
		return;
	}
	char *path = item_strdup(d, pi);
	if (!path) {
		res_error(ag, id, "ENOMEM", "out of memory");
		return;
	}
	if (any_share(ag)) {
		size_t limit = read_limit(ag);
		struct read_ctx x = {path, limit};
		fjob_start(ag, id, read_child, &x, path, FJ_READ, 12 + limit, limit, NULL);
		return;
	} else {
		uint8_t *buf;
		size_t got;
		mode_t mode = 0;
		int rc = load_file(path, read_limit(ag), &buf, &got, &mode);
		reply_loaded(ag, id, path, rc, buf, got, mode, read_limit(ag));
		free(buf);
	}
	free(path);
}

static void op_workload_signal(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint64_t sig;
	char msg[256];
	if (args_uint(d, args, "signum", true, 1, 64, &sig, msg, sizeof(msg)) < 0) {
		res_error(ag, id, "EINVAL", msg);
		return;
	}
	if (ag->wl_pid <= 0) {
		res_error(ag, id, "ESRCH", "no workload process is running");
		return;
	}
	if (kill(ag->wl_pid, (int)sig) < 0) {
		res_errno(ag, id, errno, "kill workload");
		return;
	}
	res_empty(ag, id);
}

static void tcp_connected(struct agent *ag, struct chan *c, int err)
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

static void op_tcp_connect(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint64_t port, ch;
	char msg[256];
	if (args_uint(d, args, "port", true, 1, 65535, &port, msg, sizeof(msg)) < 0 ||
	    args_uint(d, args, "ch", true, 1, UINT32_MAX, &ch, msg, sizeof(msg)) < 0) {
		res_error(ag, id, "EINVAL", msg);
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

/* ------------------------------------------------------------------ egress (SPEC 6.5) */

static void eg_dial_free(struct eg_dial *g)
{
	if (g->sock >= 0)
		close(g->sock);
	g->sock = -1;
	g->used = false;
}

/* Fail a waiting connect with err and forget the dial. */
static void eg_dial_fail(struct eg_dial *g, int err)
{
	if (g->lis)
		eg_notif_answer(g->lis->w.fd, g->notif, err);
	eg_dial_free(g);
}

static struct eg_dial *eg_dial_find(struct agent *ag, uint32_t id)
{
	for (int i = 0; i < SM_EG_MAX_DIALS; i++)
		if (ag->eg_dials[i].used && ag->eg_dials[i].id == id)
			return &ag->eg_dials[i];
	return NULL;
}

static void eg_lis_close(struct agent *ag, struct eg_lis *l)
{
	for (int i = 0; i < SM_EG_MAX_DIALS; i++)
		if (ag->eg_dials[i].used && ag->eg_dials[i].lis == l) {
			ag->eg_dials[i].lis = NULL; /* its caller is gone with the filter */
			eg_dial_free(&ag->eg_dials[i]);
		}
	watch_close(ag, &l->w);
	l->used = false;
}

static void eg_take_listeners(struct agent *ag)
{
	for (int n = 0; n < 64; n++) {
		int fd = eg_recv_listener(ag->eg_pair[0]);
		if (fd == -1)
			return;
		if (fd < 0)
			continue;
		struct eg_lis *l = NULL;
		for (int i = 0; i < SM_EG_MAX_LISTENERS && !l; i++)
			if (!ag->eg_lis[i].used)
				l = &ag->eg_lis[i];
		if (!l) {
			/* closing it makes that tree's connects fail (ENOSYS): closed, never open */
			sm_log("egress: more than %d trapped process trees", SM_EG_MAX_LISTENERS);
			close(fd);
			continue;
		}
		l->used = true;
		l->w.kind = W_EG_LIS;
		l->w.fd = fd;
		l->w.obj = l;
		l->w.reg = false;
		l->w.cur = 0;
		watch_set(ag, &l->w, EPOLLIN);
	}
}

static void eg_notified(struct agent *ag, struct eg_lis *l, uint32_t ev)
{
	/* one notification per readiness event: SECCOMP_IOCTL_NOTIF_RECV blocks when none is pending */
	if (ev & EPOLLIN) {
		for (int n = 0; n < 1; n++) {
			struct eg_target t;
			int r = eg_notif_take(l->w.fd, &t);
			if (r <= 0)
				break;
			struct eg_dial *g = NULL;
			for (int i = 0; i < SM_EG_MAX_DIALS && !g; i++)
				if (!ag->eg_dials[i].used)
					g = &ag->eg_dials[i];
			if (!ag->session || !g) {
				/* no host to ask, or too many connects in flight: refused at once */
				eg_notif_answer(l->w.fd, t.notif, ag->session ? EAGAIN : ENETUNREACH);
				close(t.sock);
				continue;
			}
			g->used = true;
			g->id = ++ag->eg_next_dial;
			if (g->id == 0)
				g->id = ++ag->eg_next_dial;
			g->lis = l;
			g->notif = t.notif;
			g->sock = t.sock;
			g->family = t.family;
			g->deadline = mono_ms() + SM_EG_DIAL_TIMEOUT_MS;
			evt_begin(ag, "dial", 3);
			kv_uint(ag, "id", g->id);
			kv_text(ag, "addr", t.addr);
			kv_uint(ag, "port", t.port);
			fend(ag);
		}
	}
	if ((ev & (EPOLLHUP | EPOLLERR)) && !(ev & EPOLLIN))
		eg_lis_close(ag, l); /* every process of that tree has exited */
}

static void op_dial_answer(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint32_t dial, ch;
	int ei;
	char msg[256];
	if (args_dial_answer(d, args, &dial, &ch, &ei, msg, sizeof(msg)) < 0) {
		res_error(ag, id, "EINVAL", msg);
		return;
	}
	uint32_t ids[1] = {ch};
	if (ch && !ids_fresh(ag, ids, 1)) {
		res_error(ag, id, "EINVAL", "ch: channel ids must be greater than every id used before");
		return;
	}
	if (ch)
		ids_commit(ag, ids, 1);
	struct eg_dial *g = eg_dial_find(ag, dial);
	if (!g || !g->lis || !eg_notif_valid(g->lis->w.fd, g->notif)) {
		if (g)
			eg_dial_free(g);
		res_error(ag, id, "ENOENT", "no such dial (the connecting process is gone)");
		return;
	}
	if (ei >= 0) {
		eg_dial_fail(g, eg_errno_of((const char *)cb_ptr(d, (uint32_t)ei), d->items[ei].len));
		res_empty(ag, id);
		return;
	}
	struct chan *c = chan_alloc(ag, ch);
	if (!c) {
		eg_dial_fail(g, EAGAIN);
		res_error(ag, id, "EBUSY", "too many open channels");
		return;
	}
	int fd = eg_relay_connect(g->sock, g->family);
	if (fd < 0) {
		chan_release(ag, c);
		eg_dial_fail(g, -fd);
		res_errno(ag, id, -fd, "relay");
		return;
	}
	c->tcp = true;
	c->rw.fd = fd;
	c->out_open = c->in_open = true;
	c->rw.kind = W_CH_R;
	c->ww.fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	res_empty(ag, id);
	if (c->ww.fd < 0)
		chan_send_close(ag, c);
	eg_notif_answer(g->lis->w.fd, g->notif, 0);
	eg_dial_free(g);
}

static void eg_dns_read(struct agent *ag)
{
	static uint8_t q[SM_EG_DNS_MAX_BYTES + 1];
	for (int n = 0; n < 32; n++) {
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t r = recvfrom(ag->eg_dns_w.fd, q, sizeof(q), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (r < 0)
			return;
		if (r < 12 || r > SM_EG_DNS_MAX_BYTES || !ag->session || fl != sizeof(from))
			continue; /* not a query we carry; the resolver retries or gives up */
		int64_t now = mono_ms();
		if (now - ag->eg_dns_window >= 1000) {
			ag->eg_dns_window = now;
			ag->eg_dns_count = 0;
		}
		if (++ag->eg_dns_count > SM_EG_DNS_PER_SEC)
			continue;
		struct eg_q *s = &ag->eg_q[0];
		for (int i = 0; i < SM_EG_MAX_DNS; i++) {
			if (!ag->eg_q[i].used) {
				s = &ag->eg_q[i];
				break;
			}
			if (ag->eg_q[i].t < s->t)
				s = &ag->eg_q[i]; /* full: the oldest query is forgotten */
		}
		s->used = true;
		s->id = ++ag->eg_next_q;
		s->t = now;
		s->from = from;
		evt_begin(ag, "dns", 2);
		kv_uint(ag, "id", s->id);
		cbe_text(&ag->outq, "q");
		cbe_bytes(&ag->outq, q, (size_t)r);
		fend(ag);
	}
}

static void op_dns_answer(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint32_t qid;
	int a;
	char msg[256];
	if (args_dns_answer(d, args, &qid, &a, msg, sizeof(msg)) < 0) {
		res_error(ag, id, "EINVAL", msg);
		return;
	}
	for (int i = 0; i < SM_EG_MAX_DNS; i++) {
		struct eg_q *s = &ag->eg_q[i];
		if (!s->used || s->id != qid)
			continue;
		s->used = false;
		if (ag->eg_dns_w.fd >= 0)
			sendto(ag->eg_dns_w.fd, cb_ptr(d, (uint32_t)a), d->items[a].len, MSG_DONTWAIT,
			       (struct sockaddr *)&s->from, sizeof(s->from));
		break;
	}
	res_empty(ag, id); /* an answer to a forgotten query is dropped silently */
}

static void eg_session_reset(struct agent *ag)
{
	for (int i = 0; i < SM_EG_MAX_DIALS; i++)
		if (ag->eg_dials[i].used)
			eg_dial_fail(&ag->eg_dials[i], ENETUNREACH);
	for (int i = 0; i < SM_EG_MAX_DNS; i++)
		ag->eg_q[i].used = false;
}

static void eg_timers(struct agent *ag, int64_t now)
{
	for (int i = 0; i < SM_EG_MAX_DIALS; i++)
		if (ag->eg_dials[i].used && now >= ag->eg_dials[i].deadline)
			eg_dial_fail(&ag->eg_dials[i], ETIMEDOUT);
}

static void eg_init(struct agent *ag)
{
	for (int i = 0; i < SM_EG_MAX_DIALS; i++)
		ag->eg_dials[i].sock = -1;
	ag->eg_pair[0] = ag->eg_pair[1] = -1;
	ag->eg_dns_w.fd = -1;
	if (getpid() != 1 || ag->cfg->has_net)
		return;
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, ag->eg_pair) < 0) {
		sm_log("egress: socketpair: %s", strerror(errno));
		return;
	}
	set_nonblock(ag->eg_pair[0]);
	ag->eg_on = true;
	ag->eg_child_fd = ag->eg_pair[1];
	ag->eg_w.kind = W_EG_SOCK;
	ag->eg_w.fd = ag->eg_pair[0];
	watch_set(ag, &ag->eg_w, EPOLLIN);
	int dns = eg_dns_open();
	if (dns >= 0) {
		ag->eg_dns_w.kind = W_EG_DNS;
		ag->eg_dns_w.fd = dns;
		watch_set(ag, &ag->eg_dns_w, EPOLLIN);
		eg_resolv_write();
	} else {
		sm_log("egress: DNS stub: %s", strerror(errno));
	}
}

static void port_write(struct agent *ag);

/* Write queued frames now rather than at the end of the event-loop turn. */
static void flush_now(struct agent *ag)
{
	if (ag->connected && outq_pending(ag) > 0)
		port_write(ag);
}

static void op_resume(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint64_t tns;
	int ei;
	char msg[256];
	if (args_uint(d, args, "timeNs", true, 0, UINT64_MAX, &tns, msg, sizeof(msg)) < 0 ||
	    args_bytes(d, args, "entropy", &ei, msg, sizeof(msg)) < 0) {
		res_error(ag, id, "EINVAL", msg);
		return;
	}
	uint32_t elen = d->items[ei].len;
	if (elen < SM_ENTROPY_MIN || elen > SM_ENTROPY_MAX) {
		res_error(ag, id, "EINVAL", "entropy: must be 32..512 bytes");
		return;
	}
	struct timespec ts = {.tv_sec = (time_t)(tns / 1000000000ull), .tv_nsec = (long)(tns % 1000000000ull)};
	if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
		res_errno(ag, id, errno, "clock_settime");
		return;
	}
	struct {
		int entropy_count;
		int buf_size;
		uint8_t buf[SM_ENTROPY_MAX];
	} rpi;
	rpi.entropy_count = (int)elen * 8;
	rpi.buf_size = (int)elen;
	memcpy(rpi.buf, cb_ptr(d, (uint32_t)ei), elen);
	int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, SM_RNDADDENTROPY, &rpi) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		res_errno(ag, id, e, "RNDADDENTROPY");
		return;
	}
	/* force the CRNG to reseed now so getrandom() diverges between two restores */
	if (ioctl(fd, SM_RNDRESEEDCRNG) < 0)
		sm_log("RNDRESEEDCRNG: %s", strerror(errno));
	close(fd);
	memset(&rpi, 0, sizeof(rpi));
	res_empty(ag, id);
	if (ag->cfg->start == START_RESUME) {
		/* Send the answer before starting the workload: the first fork after a restore costs
		 * tens of milliseconds under TCG and the host hands the VM out on this answer. Requests
		 * that follow are read only after the workload has started, so their order holds. */
		flush_now(ag);
		workload_start(ag);
	}
}

static void op_stats(struct agent *ag, uint32_t id)
{
	uint64_t total = meminfo_kib("MemTotal"), avail = meminfo_kib("MemAvailable");
	uint64_t load = 0;
	FILE *f = fopen("/proc/loadavg", "re");
	if (f) {
		unsigned long a = 0, b = 0;
		if (fscanf(f, "%lu.%lu", &a, &b) == 2)
			load = (uint64_t)a * 1000 + (uint64_t)b * 10; /* two decimals in /proc/loadavg */
		fclose(f);
	}
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	res_begin(ag, id, 4);
	kv_uint(ag, "memTotalKib", total);
	kv_uint(ag, "memAvailKib", avail);
	kv_uint(ag, "uptimeMs", (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
	kv_uint(ag, "loadAvg1Milli", load);
	fend(ag);
}

static void flush_blocking(struct agent *ag, int timeout_ms)
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

static void op_shutdown(struct agent *ag, uint32_t id)
{
	res_empty(ag, id);
	flush_blocking(ag, 1000);
	sm_poweroff();
}

/* ------------------------------------------------------------------ shares (SPEC 6.4) */

static void share_write(void *ctx, const uint8_t *m, uint32_t len)
{
	struct share *s = ctx;
	/* one message, one write; errors (ENOENT: the request is gone) are ignored */
	ssize_t w = write(s->w.fd, m, len);
	(void)w;
}

static void share_eio(struct share *s, uint64_t unique)
{
	uint8_t hdr[FS_OUT_HDR];
	fs_err_reply(hdr, unique, EIO);
	share_write(s, hdr, sizeof(hdr));
}

/* The channel is gone without fs-detach: answer everything with EIO from now on. */
static void share_orphan(struct share *s)
{
	if (s->ch) {
		s->ch->fs = NULL;
		s->ch = NULL;
		sm_log("share %s: host channel gone; guest requests get EIO until fs-detach", s->tag);
	}
	s->req_len = s->req_off = 0;
	s->relay.rhave = 0;
	s->relay.init_pending = false;
	if (s->w.fd >= 0)
		for (uint32_t i = 0; i < s->relay.nuniq; i++)
			share_eio(s, s->relay.uniq[i]);
	s->relay.nuniq = 0;
}

/* Send (the rest of) the held request within the channel's credit. */
static void share_send(struct agent *ag, struct share *s)
{
	struct chan *c = s->ch;
	while (c && s->req_off < s->req_len && ag->session && c->state == CH_OPEN && !c->removed && c->out_open &&
	       c->credit > 0 && outq_pending(ag) <= SM_OUTQ_SOFT_BYTES) {
		size_t k = s->req_len - s->req_off;
		if (k > c->credit)
			k = (size_t)c->credit;
		size_t maxd = ag->host_max_frame - SM_DATA_OVERHEAD_BYTES;
		if (k > maxd)
			k = maxd;
		send_data(ag, c->id, s->req + s->req_off, k);
		c->credit -= k;
		s->req_off += (uint32_t)k;
	}
	if (s->req_off >= s->req_len)
		s->req_off = s->req_len = 0;
}

static void share_pump(struct agent *ag, struct share *s)
{
	for (int i = 0; i < 16 && s->used && !s->dead && s->w.fd >= 0; i++) {
		bool orphan = !s->ch;
		if (!orphan) {
			share_send(ag, s);
			if (s->req_len > 0 || fs_relay_full(&s->relay) || !ag->session || s->ch->credit == 0 ||
			    outq_pending(ag) > SM_OUTQ_SOFT_BYTES)
				return;
		}
		ssize_t n = read(s->w.fd, s->req, FS_REQ_BUF);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			/* ENODEV: the connection was aborted or the file system unmounted */
			sm_log("share %s: /dev/fuse: %s", s->tag, n < 0 ? strerror(errno) : "end of file");
			s->dead = true;
			watch_set(ag, &s->w, 0);
			return;
		}
		uint32_t op;
		uint64_t uq;
		if (fs_req_parse(s->req, (size_t)n, &op, &uq) < 0)
			continue; /* not one whole request: nothing sane to forward */
		if (orphan) {
			if (fs_req_needs_reply(op) && uq)
				share_eio(s, uq);
			continue;
		}
		fs_relay_track(&s->relay, op, uq); /* cannot fail: not full (checked above) */
		s->req_len = (uint32_t)n;
		s->req_off = 0;
	}
}

/* Bytes from the host on the share's channel (credit already checked). */
static void share_from_host(struct agent *ag, struct chan *c, const uint8_t *p, uint32_t n)
{
	struct share *s = c->fs;
	if (fs_relay_feed(&s->relay, p, n, share_write, s) < 0) {
		sm_log("share %s: FUSE message length outside 16..%u from the host; channel closed", s->tag,
		       FS_REPLY_MAX);
		share_orphan(s);
		chan_send_close(ag, c);
		return;
	}
	/* every complete message went to /dev/fuse at once: the bytes are consumed */
	c->consumed += n;
	if (c->consumed >= SM_WINDOW_BYTES / 2) {
		send_credit(ag, c->id, c->consumed);
		c->granted += c->consumed;
		c->consumed = 0;
	}
}

static bool any_share(struct agent *ag)
{
	for (int i = 0; i < FS_MAX_SHARES; i++)
		if (ag->shares[i].used)
			return true;
	return false;
}

static struct share *share_find(struct agent *ag, const char *tag)
{
	for (int i = 0; i < FS_MAX_SHARES; i++)
		if (ag->shares[i].used && !strcmp(ag->shares[i].tag, tag))
			return &ag->shares[i];
	return NULL;
}

static void share_free(struct agent *ag, struct share *s)
{
	watch_close(ag, &s->w);
	free(s->path);
	free(s->req);
	free(s->relay.rbuf);
	memset(s, 0, sizeof(*s));
	s->w.fd = -1;
}

/* Copy our own binary to /sbin/mount.smfs (mount -t smfs runs it) and point the symlink
 * /sbin/mount.virtiofs at it (mount -t virtiofs). Child process only. */
static void install_mount_helper(void)
{
	int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return;
	mkdir("/sbin", 0755);
	char tmp[64];
	snprintf(tmp, sizeof(tmp), "/sbin/.mount.smfs.%d", (int)getpid());
	int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0755);
	if (out < 0) {
		close(in);
		return;
	}
	uint8_t buf[16384];
	bool okw = true;
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			okw = false;
		if (n <= 0)
			break;
		if (write_whole(out, buf, (size_t)n) < 0) {
			okw = false;
			break;
		}
	}
	close(in);
	if (fchmod(out, 0755) < 0)
		okw = false;
	if (close(out) < 0)
		okw = false;
	if (!okw || rename(tmp, FS_HELPER) < 0) {
		unlink(tmp);
		return;
	}
	snprintf(tmp, sizeof(tmp), "/sbin/.mount.virtiofs.%d", (int)getpid());
	if (symlink("mount.smfs", tmp) < 0 || rename(tmp, FS_HELPER_VIRTIOFS) < 0)
		unlink(tmp);
}

static int mkdir_p(const char *path)
{
	int r = mkdir_parents(path);
	if (r < 0)
		return r;
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Path work that may touch other FUSE mounts (a symlink into a share, a path below one)
 * runs in a child: if it blocks on a FUSE request, only the child waits, and PID 1 (which
 * relays those requests) kills it after FS_HELPER_TIMEOUT_MS. The child reports
 * {stage, errno} on a pipe. */
struct fs_job {
	int kind; /* 1 attach, 2 detach */
	const char *tag;
	const char *path; /* attach: bind target or NULL */
	int fd;           /* attach: /dev/fuse */
	bool install;     /* attach: write /sbin/mount.smfs afterwards */
	const struct fs_binds *rebind; /* attach: users' binds remembered at the last fs-detach */
};

static void fs_job_child(const struct fs_job *j, int wr)
{
	int res[2] = {0, 0};
	char staging[128];
	snprintf(staging, sizeof(staging), "%s/%s", FS_STAGING, j->tag);
	if (j->kind == 2) {
		res[1] = fs_umount_tag(j->tag);
	} else {
		char opts[256];
		snprintf(opts, sizeof(opts),
			 "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,max_read=%u,subtype=smfs", j->fd,
			 FS_MAX_WRITE);
		int r = mkdir_p(staging);
		if (r < 0)
			res[0] = 1, res[1] = -r;
		else if (mount(j->tag, staging, "fuse", MS_NOSUID | MS_NODEV, opts) < 0)
			res[0] = 2, res[1] = errno;
		else if (j->path && (r = mkdir_p(j->path)) < 0)
			res[0] = 3, res[1] = -r;
		else if (j->path && mount(staging, j->path, NULL, MS_BIND, NULL) < 0)
			res[0] = 4, res[1] = errno;
		if (res[0] >= 3)
			umount2(staging, MNT_DETACH);
		else if (res[0] == 0 && j->rebind)
			fs_binds_restore(staging, j->rebind);
	}
	ssize_t w = write(wr, res, sizeof(res));
	(void)w;
	close(wr);
	if (j->kind == 1) {
		close(j->fd); /* only PID 1 may hold the connection: closing it there aborts it */
		if (res[0] == 0 && j->install)
			install_mount_helper();
	}
	_exit(0);
}

static void fs_job_trampoline(void *ctx, int wr)
{
	fs_job_child(ctx, wr);
}

/* Returns 0 with res filled, or -errno (ETIMEDOUT when the child was stuck). */
static int fs_job_run(const struct fs_job *j, int res[2])
{
	ssize_t n = guarded_fork(fs_job_trampoline, (void *)(uintptr_t)j, (uint8_t *)res, sizeof(int) * 2);
	if (n < 0)
		return (int)n;
	return n == (ssize_t)(sizeof(int) * 2) ? 0 : -EIO; /* the child died without an answer */
}

static void op_fs_attach(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	char tag[FS_TAG_MAX + 1], msg[320];
	uint32_t ch;
	int pi;
	if (args_fs_attach(d, args, tag, &ch, &pi, msg, sizeof(msg)) < 0) {
		res_error(ag, id, "EINVAL", msg);
		return;
	}
	uint32_t ids[1] = {ch};
	if (!ids_fresh(ag, ids, 1)) {
		res_error(ag, id, "EINVAL", "ch: channel ids must be greater than every id used before");
		return;
	}
	ids_commit(ag, ids, 1);
	if (share_find(ag, tag)) {
		snprintf(msg, sizeof(msg), "share '%s' is already attached (fs-detach it first)", tag);
		res_error(ag, id, "EEXIST", msg);
		return;
	}
	struct share *s = NULL;
	for (int i = 0; i < FS_MAX_SHARES && !s; i++)
		if (!ag->shares[i].used)
			s = &ag->shares[i];
	if (!s || chan_free_slots(ag) == 0) {
		res_error(ag, id, "EBUSY", s ? "too many open channels" : "16 shares are attached already");
		return;
	}
	char path[SM_PATH_MAX_BYTES + 1];
	if (pi >= 0) {
		memcpy(path, cb_ptr(d, (uint32_t)pi), d->items[pi].len);
		path[d->items[pi].len] = 0;
		if (on_share(ag, path)) {
			snprintf(msg, sizeof(msg), "path: %.200s is on a live host share; choose a path outside", path);
			res_error(ag, id, "EINVAL", msg);
			return;
		}
	}
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENODEV || errno == ENXIO)
			res_error(ag, id, "ENODEV",
				  "/dev/fuse is missing: the guest kernel has no fuse module (the image was built "
				  "without mounts support)");
		else
			res_errno(ag, id, errno, "open /dev/fuse");
		return;
	}
	uint8_t *req = malloc(FS_REQ_BUF), *rbuf = malloc(FS_REPLY_MAX);
	if (!req || !rbuf) {
		free(req);
		free(rbuf);
		close(fd);
		res_error(ag, id, "ENOMEM", "no memory for the share buffers");
		return;
	}
	/* users' binds of this tag from before the last fs-detach (e.g. a warmup's mount -t virtiofs) */
	struct fs_binds *rebind = fs_binds_find(tag);
	if (rebind)
		fs_binds_prune(rebind, rebind_skip, pi >= 0 ? path : NULL);
	struct fs_job job = {.kind = 1, .tag = tag, .path = pi >= 0 ? path : NULL, .fd = fd,
			     .install = !ag->helper_installed, .rebind = rebind};
	int res[2] = {0, 0};
	int r = fs_job_run(&job, res);
	if (r < 0 || res[0] != 0) {
		static const char *const what[] = {"", "mkdir " FS_STAGING "/<tag>", "mount fuse", "mkdir path",
						   "bind mount on path"};
		int e = r < 0 ? -r : res[1];
		snprintf(msg, sizeof(msg), "fs-attach %s: %s: %s", tag,
			 r < 0 ? "mount helper process" : what[res[0] >= 1 && res[0] <= 4 ? res[0] : 0], strerror(e));
		close(fd); /* aborts the connection if the mount happened (timeout case) */
		free(req);
		free(rbuf);
		if (r == -ETIMEDOUT) {
			struct fs_job dj = {.kind = 2, .tag = tag};
			int dres[2];
			fs_job_run(&dj, dres);
		}
		res_error(ag, id, errno_code(e), msg);
		return;
	}
	ag->helper_installed = true;
	fs_binds_forget(tag); /* made again (or skipped); the next fs-detach remembers afresh */
	struct chan *c = chan_alloc(ag, ch);
	memset(s, 0, sizeof(*s));
	s->used = true;
	memcpy(s->tag, tag, sizeof(s->tag));
	s->w.kind = W_FUSE;
	s->w.fd = fd;
	s->w.obj = s;
	s->req = req;
	s->path = pi >= 0 ? strdup(path) : NULL; /* NULL on ENOMEM too: then it counts as a user's bind */
	fs_relay_init(&s->relay, rbuf);
	res_empty(ag, id);
	if (!c) { /* checked above; cannot happen */
		share_orphan(s);
		return;
	}
	c->fs = s;
	c->out_open = c->in_open = true;
	s->ch = c;
}

static void op_fs_detach(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	char tag[FS_TAG_MAX + 1], msg[256];
	if (args_tag(d, args, "tag", tag, msg, sizeof(msg)) < 0) {
		res_error(ag, id, "EINVAL", msg);
		return;
	}
	struct share *s = share_find(ag, tag);
	if (!s) {
		snprintf(msg, sizeof(msg), "share '%s' is not attached", tag);
		res_error(ag, id, "ENOENT", msg);
		return;
	}
	/* remember users' binds (mount -t virtiofs) so that the next fs-attach makes them again */
	char staging[128];
	snprintf(staging, sizeof(staging), "%s/%s", FS_STAGING, tag);
	fs_binds_save(tag, staging, s->path);
	/* close /dev/fuse first: the kernel aborts the connection, so nothing below can wait on it */
	watch_close(ag, &s->w);
	struct fs_job j = {.kind = 2, .tag = tag};
	int res[2];
	if (fs_job_run(&j, res) < 0)
		sm_log("fs-detach %s: unmount helper did not finish", tag);
	struct chan *c = s->ch;
	if (c) {
		c->fs = NULL;
		s->ch = NULL;
		chan_send_close(ag, c);
	}
	share_free(ag, s);
	res_empty(ag, id);
}

static void violation(struct agent *ag, const char *code, const char *msg);

static void dispatch_req(struct agent *ag, const struct cb_doc *d, const struct frame_info *fi)
{
	uint32_t id = fi->id;
	if (pending_has(ag, id)) {
		violation(ag, E_DUPLICATE_ID, "req id is still pending");
		return;
	}
	if (ag->npending >= SM_MAX_PENDING) {
		res_error(ag, id, "EBUSY", "too many pending requests");
		return;
	}
	uint32_t op = fi->op, args = fi->args;
	if (cb_text_eq(d, op, "exec"))
		op_exec(ag, id, d, args, false);
	else if (cb_text_eq(d, op, "spawn"))
		op_exec(ag, id, d, args, true);
	else if (cb_text_eq(d, op, "signal"))
		op_signal(ag, id, d, args);
	else if (cb_text_eq(d, op, "resize"))
		op_resize(ag, id, d, args);
	else if (cb_text_eq(d, op, "close-stdin"))
		op_close_stdin(ag, id, d, args);
	else if (cb_text_eq(d, op, "write-file"))
		op_write_file(ag, id, d, args);
	else if (cb_text_eq(d, op, "read-file"))
		op_read_file(ag, id, d, args);
	else if (cb_text_eq(d, op, "workload-signal"))
		op_workload_signal(ag, id, d, args);
	else if (cb_text_eq(d, op, "tcp-connect"))
		op_tcp_connect(ag, id, d, args);
	else if (cb_text_eq(d, op, "resume"))
		op_resume(ag, id, d, args);
	else if (cb_text_eq(d, op, "ping"))
		res_empty(ag, id);
	else if (cb_text_eq(d, op, "stats"))
		op_stats(ag, id);
	else if (cb_text_eq(d, op, "fs-attach"))
		op_fs_attach(ag, id, d, args);
	else if (cb_text_eq(d, op, "fs-detach"))
		op_fs_detach(ag, id, d, args);
	else if (cb_text_eq(d, op, "shutdown"))
		op_shutdown(ag, id);
	else if (ag->eg_on && cb_text_eq(d, op, "dial-answer"))
		op_dial_answer(ag, id, d, args);
	else if (ag->eg_on && cb_text_eq(d, op, "dns-answer"))
		op_dns_answer(ag, id, d, args);
	else {
		char msg[128];
		size_t n = d->items[op].len; /* op text is not NUL-terminated */
		snprintf(msg, sizeof(msg), "unknown op %.*s", (int)(n > 64 ? 64 : n), (const char *)cb_ptr(d, op));
		res_error(ag, id, "SM_UNKNOWN_OP", msg);
	}
}

/* ------------------------------------------------------------------ session */

static void session_reset(struct agent *ag)
{
	for (int i = 0; i < SM_MAX_PROCS; i++) {
		struct proc *p = &ag->procs[i];
		if (!p->used)
			continue;
		if (p->kind == PK_EXEC && p->pending) {
			kill_group(p->pid);
			p->pending = false;
			p->cancelled = true;
		}
	}
	for (int i = 0; i < SM_MAX_CHANNELS; i++) {
		struct chan *c = &ag->chans[i];
		if (c->state == CH_FREE)
			continue;
		if (c->proc) {
			struct proc *p = c->proc;
			if (p->out == c)
				p->out = NULL;
			if (p->err == c)
				p->err = NULL;
			if (p->in == c)
				p->in = NULL;
		}
		c->proc = NULL;
		chan_release(ag, c);
	}
	ag->npending = 0;
	ag->last_ch = 0;
	ag->session = false;
	eg_session_reset(ag);
	ag->listening_reported = false;
	outq_drop(ag);
	/* processes whose channels vanished may now be complete */
	for (int i = 0; i < SM_MAX_PROCS; i++)
		if (ag->procs[i].used)
			proc_check_done(ag, &ag->procs[i]);
}

static void handle_hello(struct agent *ag, const struct frame_info *fi)
{
	sm_dbg("hello from host (nonce %u)", fi->nonce);
	session_reset(ag);
	if (fi->v < 1) {
		send_fatal(ag, E_VERSION, "agent speaks protocol version 1 only");
		return;
	}
	ag->session = true;
	ag->sess++;
	ag->host_max_frame = (uint32_t)fi->max_frame;
	ag->host_window = (uint32_t)fi->window;
	fbegin(ag);
	cbe_map(&ag->outq, fi->has_nonce ? 10 : 9);
	kv_text(ag, "t", "hello");
	kv_uint(ag, "v", 1);
	kv_text(ag, "agent", SM_AGENT_VERSION);
	static const char *const caps[] = {"exec", "spawn", "signal", "resize", "close-stdin",
					   "write-file", "read-file", "workload-signal", "tcp-connect",
					   "resume", "ping", "shutdown", "stats", "tty", "chain",
					   "fs-attach", "fs-detach", "fs", "agent-exe"};
	size_t ncaps = sizeof(caps) / sizeof(caps[0]);
	bool work_cg = sm_work_cgroup_fd >= 0;
	cbe_text(&ag->outq, "caps");
	cbe_array(&ag->outq, ncaps + (work_cg ? 1 : 0) + (ag->eg_on ? 3 : 0));
	for (size_t i = 0; i < ncaps; i++)
		cbe_text(&ag->outq, caps[i]);
	if (work_cg)
		cbe_text(&ag->outq, "work-cgroup");
	if (ag->eg_on) {
		cbe_text(&ag->outq, "egress");
		cbe_text(&ag->outq, "dial-answer");
		cbe_text(&ag->outq, "dns-answer");
	}
	kv_uint(ag, "maxFrame", SM_MAX_FRAME_BYTES);
	kv_uint(ag, "window", SM_WINDOW_BYTES);
	cbe_text(&ag->outq, "ready");
	cbe_bool(&ag->outq, true);
	cbe_text(&ag->outq, "listening");
	if (ag->listening_seen)
		cbe_uint(&ag->outq, ag->cfg->guest_port);
	else
		cbe_null(&ag->outq);
	kv_uint(ag, "bootMs", (uint64_t)ag->boot_ms);
	if (fi->has_nonce)
		kv_uint(ag, "nonce", fi->nonce);
	fend(ag);
	ag->listening_reported = ag->listening_seen;
}

/* Protocol violation: tell the host, drop the session, resynchronise. */
static void violation(struct agent *ag, const char *code, const char *msg)
{
	sm_log("protocol violation %s: %s", code, msg);
	session_reset(ag);
	send_fatal(ag, code, msg);
	/* the fatal frame must reach the host although the session is gone */
	ag->host_max_frame = SM_MAX_FRAME_BYTES;
}

static void handle_chan_frame(struct agent *ag, const struct cb_doc *d, const struct frame_info *fi)
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

static void handle_frame(struct agent *ag, const uint8_t *body, size_t len)
{
	struct cb_doc d;
	struct frame_info fi;
	const char *code = NULL;
	char msg[256];
	uint32_t cap = len < SM_MAX_ITEMS ? (uint32_t)len : SM_MAX_ITEMS;
	struct cb_item *items = malloc((size_t)cap * sizeof(*items));
	if (!items) {
		violation(ag, E_BAD_CBOR, "out of memory for the frame");
		return;
	}
	uint32_t maxd = SM_MAX_FRAME_BYTES - SM_DATA_OVERHEAD_BYTES;
	if (proto_check_frame(&d, body, len, items, cap, maxd, &fi, &code, msg, sizeof(msg)) < 0) {
		violation(ag, code, msg);
		free(items);
		return;
	}
	switch (fi.kind) {
	case FK_HELLO:
		handle_hello(ag, &fi);
		break;
	case FK_REQ:
		dispatch_req(ag, &d, &fi);
		break;
	case FK_FATAL:
		sm_log("host sent fatal; session dropped");
		session_reset(ag);
		break;
	default:
		handle_chan_frame(ag, &d, &fi);
		break;
	}
	free(items);
}

static bool hello_candidate(const uint8_t *p)
{
	static const uint8_t marker[8] = {0x61, 0x74, 0x65, 0x68, 0x65, 0x6c, 0x6c, 0x6f};
	uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	return n >= 1 && n <= SM_MAX_FRAME_BYTES && p[4] >= 0xa1 && p[4] <= 0xb7 &&
	       memcmp(p + 5, marker, 8) == 0;
}

/* Process buffered input. Returns bytes consumed. */
static size_t process_input(struct agent *ag)
{
	size_t off = 0;
	while (ag->in_len - off >= 4) {
		uint8_t *p = ag->in + off;
		size_t avail = ag->in_len - off;
		if (!ag->session) {
			/* resynchronisation scan (SPEC 4.4) */
			if (avail < 13)
				break;
			if (!hello_candidate(p)) {
				off++;
				continue;
			}
			uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
			if (avail < 4 + (size_t)n) {
				/* A stale candidate may claim a length that never arrives; if a later
				 * candidate is already complete, this one cannot be the live hello. */
				bool later = false;
				for (size_t q = 1; q + 13 <= avail && !later; q++) {
					if (!hello_candidate(p + q))
						continue;
					uint32_t m = (uint32_t)p[q] << 24 | (uint32_t)p[q + 1] << 16 |
						     (uint32_t)p[q + 2] << 8 | p[q + 3];
					later = avail - q >= 4 + (size_t)m;
				}
				if (later) {
					off++;
					continue;
				}
				break;
			}
			struct cb_doc d;
			struct frame_info fi;
			const char *code;
			char msg[128];
			uint32_t cap = n < SM_MAX_ITEMS ? n : SM_MAX_ITEMS;
			struct cb_item *items = malloc((size_t)cap * sizeof(*items));
			if (!items)
				break;
			int r = proto_check_frame(&d, p + 4, n, items, cap, SM_MAX_FRAME_BYTES, &fi, &code, msg,
						  sizeof(msg));
			free(items);
			if (r == 0 && fi.kind == FK_HELLO) {
				handle_hello(ag, &fi);
				off += 4 + (size_t)n;
			} else {
				off += r == 0 ? 4 + (size_t)n : 1;
			}
			continue;
		}
		uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
		if (n == 0) {
			violation(ag, E_FRAME_EMPTY, "frame length 0");
			off += 4;
			continue;
		}
		if (n > SM_MAX_FRAME_BYTES) {
			violation(ag, E_FRAME_TOO_LARGE, "frame longer than maxFrame");
			off += 4;
			continue;
		}
		if (avail < 4 + (size_t)n)
			break;
		handle_frame(ag, p + 4, n);
		off += 4 + (size_t)n;
		if (ag->shutting_down)
			break;
	}
	return off;
}

/* ------------------------------------------------------------------ transport */

static void port_disconnected(struct agent *ag)
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

static void transport_take(struct agent *ag)
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

static void port_probe(struct agent *ag)
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

static void port_read(struct agent *ag)
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

static void port_write(struct agent *ag)
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
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, name, sizeof(name) - 1);
		close(fd);
		if (n <= 0)
			continue;
		name[n] = 0;
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

static int open_port(struct agent *ag)
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

/* ------------------------------------------------------------------ signals */

static void reap(struct agent *ag)
{
	for (;;) {
		int st;
		struct rusage ru;
		pid_t pid = wait4(-1, &st, WNOHANG, &ru);
		if (pid <= 0)
			return;
		if (pid == ag->wl_pid) {
			ag->wl_pid = 0;
			if (ag->session) {
				evt_begin(ag, "workload-exit", 2);
				struct proc tmp;
				tmp.status = st;
				enc_exit_fields(ag, &tmp);
				fend(ag);
			}
		}
		struct proc *p = proc_by_pid(ag, pid);
		if (!p)
			continue;
		p->exited = true;
		p->status = st;
		if ((uint64_t)ru.ru_maxrss > p->peak_rss)
			p->peak_rss = (uint64_t)ru.ru_maxrss;
		proc_check_done(ag, p);
	}
}

static void handle_signals(struct agent *ag)
{
	struct signalfd_siginfo si;
	while (read(ag->sfd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			reap(ag);
			break;
		case SIGTERM:
		case SIGINT:
			if (ag->wl_pid > 0)
				kill(ag->wl_pid, (int)si.ssi_signo);
			break;
		case SIGIO:
			if (!ag->connected)
				ag->next_port_probe = 0;
			break;
		default:
			break;
		}
	}
	reap(ag);
}

/* ------------------------------------------------------------------ loop */

static void sync_interests(struct agent *ag)
{
	bool room = outq_pending(ag) <= SM_OUTQ_SOFT_BYTES && ag->session;
	for (int i = 0; i < SM_MAX_CHANNELS; i++) {
		struct chan *c = &ag->chans[i];
		if (c->state == CH_FREE)
			continue;
		if (c->connecting) {
			watch_set(ag, &c->rw, EPOLLOUT);
			continue;
		}
		uint32_t r = 0;
		if (c->rw.fd >= 0 && !c->r_eof && !c->r_stuck) {
			bool live = !c->removed && c->state == CH_OPEN && ag->session;
			if (c->collect)
				r = (c->clen < SM_COLLECT_BUF_BYTES || !live) ? EPOLLIN : 0;
			else if (!live)
				r = EPOLLIN; /* discard */
			else
				r = (room && c->credit > 0) ? EPOLLIN : 0;
			if (c->collect && c->clen == SM_COLLECT_BUF_BYTES && live && c->credit > 0)
				collect_flush(ag, c), r = EPOLLIN;
		}
		watch_set(ag, &c->rw, r);
		watch_set(ag, &c->ww, (c->ww.fd >= 0 && c->ioff < c->ilen) ? EPOLLOUT : 0);
	}
	for (int i = 0; i < FS_MAX_SHARES; i++) {
		struct share *s = &ag->shares[i];
		if (!s->used || s->dead)
			continue;
		if (s->ch)
			share_send(ag, s);
		bool want = !s->ch || (s->req_len == 0 && !fs_relay_full(&s->relay) && room && s->ch->credit > 0);
		watch_set(ag, &s->w, want ? EPOLLIN : 0);
	}
	if (ag->connected) {
		uint32_t w = 0;
		if (outq_pending(ag) <= SM_OUTQ_HARD_BYTES)
			w |= EPOLLIN;
		if (outq_pending(ag) > 0)
			w |= EPOLLOUT;
		watch_set(ag, &ag->port_w, w);
	}
}

static int next_timeout(struct agent *ag, int64_t now)
{
	int64_t t = 1000;
	if (!ag->connected)
		t = ag->next_port_probe - now;
	if (!ag->listening_seen && ag->cfg->guest_port && (ag->cfg->listener_required || ag->wl_started) &&
	    ag->next_listen_poll - now < t)
		t = ag->next_listen_poll - now;
	for (int i = 0; i < SM_MAX_PROCS; i++) {
		struct proc *p = &ag->procs[i];
		if (p->used && p->deadline && !p->timed_out && p->deadline - now < t)
			t = p->deadline - now;
	}
	for (int i = 0; i < SM_MAX_CHANNELS; i++) {
		struct chan *c = &ag->chans[i];
		if (c->state != CH_FREE && c->connecting && c->deadline - now < t)
			t = c->deadline - now;
	}
	for (int i = 0; i < SM_EG_MAX_DIALS; i++)
		if (ag->eg_dials[i].used && ag->eg_dials[i].deadline - now < t)
			t = ag->eg_dials[i].deadline - now;
	t = fjob_next_deadline(ag, t, now);
	return t < 0 ? 0 : (int)t;
}

static void timers(struct agent *ag, int64_t now)
{
	if (!ag->connected && now >= ag->next_port_probe)
		port_probe(ag);
	fjob_timers(ag, now);
	eg_timers(ag, now);
	listen_poll(ag, now);
	for (int i = 0; i < SM_MAX_PROCS; i++) {
		struct proc *p = &ag->procs[i];
		if (p->used && p->deadline && !p->timed_out && now >= p->deadline && !p->exited) {
			p->timed_out = true;
			kill_group(p->pid);
		}
	}
	for (int i = 0; i < SM_MAX_CHANNELS; i++) {
		struct chan *c = &ag->chans[i];
		if (c->state != CH_FREE && c->connecting && now >= c->deadline) {
			c->removed = false;
			tcp_connected(ag, c, ETIMEDOUT);
		}
	}
	/* exited processes waiting for credit to finish draining */
	for (int i = 0; i < SM_MAX_PROCS; i++)
		if (ag->procs[i].used && ag->procs[i].exited)
			proc_check_done(ag, &ag->procs[i]);
}

static void on_event(struct agent *ag, struct watch *w, uint32_t ev)
{
	switch (w->kind) {
	case W_PORT:
		if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
			port_read(ag);
		if (ag->connected && (ev & EPOLLHUP) && !(ev & EPOLLIN))
			port_disconnected(ag);
		if (ag->connected && (ev & EPOLLOUT))
			port_write(ag);
		break;
	case W_SIG:
		handle_signals(ag);
		break;
	case W_FJOB:
		fjob_readable(ag, w->obj);
		break;
	case W_VSOCK:
		transport_take(ag);
		break;
	case W_CH_R: {
		struct chan *c = w->obj;
		chan_pump(ag, c, 4);
		if (c->proc && c->proc->exited)
			proc_check_done(ag, c->proc);
		chan_maybe_release(ag, c);
		break;
	}
	case W_CH_W: {
		struct chan *c = w->obj;
		if (ev & EPOLLERR) {
			errno = EPIPE;
			c->ioff = c->ioff < c->ilen ? c->ioff : c->ilen;
		}
		chan_write(ag, c);
		break;
	}
	case W_TCP_CONN: {
		struct chan *c = w->obj;
		struct pollfd pfd = {.fd = c->rw.fd, .events = POLLOUT};
		/* a stale event from this batch may name a slot reused by a newer connect */
		if (!c->connecting || poll(&pfd, 1, 0) <= 0)
			break;
		int err = 0;
		socklen_t l = sizeof(err);
		getsockopt(c->rw.fd, SOL_SOCKET, SO_ERROR, &err, &l);
		watch_set(ag, &c->rw, 0);
		c->removed = false;
		tcp_connected(ag, c, err);
		break;
	}
	case W_FUSE:
		share_pump(ag, w->obj);
		break;
	case W_RDDONE:
		rd_collect(ag);
		break;
	case W_EG_SOCK:
		eg_take_listeners(ag);
		break;
	case W_EG_LIS:
		eg_notified(ag, w->obj, ev);
		break;
	case W_EG_DNS:
		eg_dns_read(ag);
		break;
	}
}

static int agent_loop(struct agent *ag, struct sm_config *c, int64_t boot_ms, int fd);

/* The agent's state: one instance, for the life of PID 1 (or of the test child). */
static struct agent the_agent;

int agent_run(struct sm_config *c, int64_t boot_ms) { return agent_loop(&the_agent, c, boot_ms, -1); }

/* Host-side tests: serve on an already connected stream (socketpair), return when it ends. */
int agent_serve_fd(struct sm_config *c, int fd) { return agent_loop(&the_agent, c, 0, fd); }

static int agent_loop(struct agent *ag, struct sm_config *c, int64_t boot_ms, int fd)
{
	ag->cfg = c;
	ag->boot_ms = boot_ms;
	ag->eg_child_fd = ag->rd.efd = ag->rd.w.fd = ag->vsock_w.fd = -1;
	for (int i = 0; i < SM_MAX_FILE_JOBS; i++)
		ag->fjobs[i].w.fd = -1;
	ag->host_max_frame = SM_MAX_FRAME_BYTES;
	ag->host_window = SM_WINDOW_BYTES;
	cbe_init(&ag->outq, SM_OUTQ_HARD_BYTES + SM_MAX_FRAME_BYTES + 1024);
	for (int i = 0; i < SM_MAX_CHANNELS; i++)
		ag->chans[i].rw.fd = ag->chans[i].ww.fd = -1;
	for (int i = 0; i < SM_MAX_PROCS; i++)
		ag->procs[i].pty = -1;
	for (int i = 0; i < FS_MAX_SHARES; i++)
		ag->shares[i].w.fd = -1;
	signal(SIGPIPE, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGIO);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGPWR);
	sigprocmask(SIG_BLOCK, &set, NULL);
	ag->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	ag->ep = epoll_create1(EPOLL_CLOEXEC);
	if (ag->sfd < 0 || ag->ep < 0) {
		sm_log("signalfd/epoll: %s", strerror(errno));
		return -1;
	}
	ag->sig_w.kind = W_SIG;
	ag->sig_w.fd = ag->sfd;
	watch_set(ag, &ag->sig_w, EPOLLIN);
	rd_init(ag); /* after sigprocmask: worker threads inherit the blocked signals */
	ag->rd.w.kind = W_RDDONE;
	ag->rd.w.fd = ag->rd.efd;
	watch_set(ag, &ag->rd.w, EPOLLIN);
	eg_init(ag); /* before the workload: it is trapped too */
	if (c->start == START_BOOT)
		workload_start(ag);
	if (fd >= 0) {
		ag->port = fd;
		ag->port_w.kind = W_PORT;
		ag->port_w.fd = fd;
		ag->connected = true;
		ag->exit_on_hup = true;
		set_nonblock(fd);
	} else if (open_port(ag) < 0) {
		return -1;
	}
	if (fd < 0) { /* alternative transport: vsock.h */
		ag->vsock_w.kind = W_VSOCK;
		ag->vsock_w.fd = vsock_init(ag->port);
		watch_set(ag, &ag->vsock_w, EPOLLIN);
	}
	struct epoll_event evs[64];
	for (;;) {
		sync_interests(ag);
		int64_t now = mono_ms();
		int n = epoll_wait(ag->ep, evs, 64, next_timeout(ag, now));
		if (n < 0 && errno != EINTR) {
			sm_log("epoll_wait: %s", strerror(errno));
			struct timespec ts = {0, 10 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		for (int i = 0; i < n; i++)
			on_event(ag, evs[i].data.ptr, evs[i].events);
		if (ag->exit_on_hup && !ag->connected)
			return 0;
		timers(ag, mono_ms());
		if (ag->connected && outq_pending(ag) > 0)
			port_write(ag);
	}
}
