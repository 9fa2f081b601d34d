/* Processes of exec and spawn (SPEC 6.1-6.3): start, timeouts, chain, exit results, signal,
 * resize, close-stdin. */
#include "agent_int.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

struct proc *proc_alloc(struct agent *ag)
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

struct proc *proc_by_pid(struct agent *ag, pid_t pid)
{
	for (int i = 0; i < SM_MAX_PROCS; i++)
		if (ag->procs[i].used && ag->procs[i].pid == pid)
			return &ag->procs[i];
	return NULL;
}

static void proc_free(struct proc *p)
{
	if (p->pty >= 0)
		close(p->pty);
	spec_free(p->chain);
	memset(p, 0, sizeof(*p));
	p->pty = -1;
}

void kill_group(pid_t pid)
{
	if (pid > 1) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
	}
}

void exec_cont_free(struct exec_cont *k)
{
	if (!k)
		return;
	spec_free(k->s);
	proc_free(k->p);
	free(k);
}

static void exec_req(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args, bool spawn)
{
	struct exec_args a;
	struct sm_err e;
	if (args_exec(d, args, spawn, &a, &e) < 0) {
		res_err(ag, id, &e);
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
	struct child_spec *s = NULL;
	if ((!async_stage && do_stage(d, a.stage, &e) < 0) || build_spec(ag, d, &a.cmd, &s, &e) < 0 ||
	    (a.chain >= 0 && build_spec(ag, d, &a.chain_cmd, &p->chain, &e) < 0)) {
		spec_free(s);
		proc_free(p);
		res_err(ag, id, &e);
		return;
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
		stage_start(ag, id, d, a.stage, what, k);
		return;
	}
	exec_launch(ag, id, &a, spawn, p, s);
}

void op_exec(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	exec_req(ag, id, d, args, false);
}

void op_spawn(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	exec_req(ag, id, d, args, true);
}

/* Start the command of an exec/spawn request and wire its channels; takes p and s. */
void exec_launch(struct agent *ag, uint32_t id, const struct exec_args *ap, bool spawn, struct proc *p,
		 struct child_spec *s)
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

/* The chained command's output pipe `fd` feeds the channel `c` that the first command's fed (or is
 * closed when there is none). */
static void chain_output(struct agent *ag, struct chan *c, int fd)
{
	if (c) {
		watch_close(ag, &c->rw);
		c->rw.fd = fd;
		c->r_eof = false;
	} else if (fd >= 0)
		close(fd);
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
	chain_output(ag, p->out, outfd);
	chain_output(ag, p->err, errfd);
}

void proc_check_done(struct agent *ag, struct proc *p)
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

/* The live process spawn started with this pid, or NULL with the request answered (ESRCH). */
static struct proc *spawned(struct agent *ag, uint32_t id, uint64_t pid)
{
	struct proc *p = proc_by_pid(ag, (pid_t)pid);
	if (!p || p->kind != PK_SPAWN || p->exited) {
		res_error(ag, id, "ESRCH", "no such process started by spawn");
		return NULL;
	}
	return p;
}

void op_signal(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint64_t pid, sig;
	struct sm_err e;
	if (args_uint(d, args, "pid", true, 1, INT32_MAX, &pid, &e) < 0 ||
	    args_uint(d, args, "signum", true, 1, 64, &sig, &e) < 0) {
		res_err(ag, id, &e);
		return;
	}
	if (!spawned(ag, id, pid))
		return;
	if (kill((pid_t)pid, (int)sig) < 0) {
		res_errno(ag, id, errno, "kill");
		return;
	}
	res_empty(ag, id);
}

void op_resize(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint64_t pid, cols, rows;
	struct sm_err e;
	if (args_uint(d, args, "pid", true, 1, INT32_MAX, &pid, &e) < 0 ||
	    args_uint(d, args, "cols", true, 1, 65535, &cols, &e) < 0 ||
	    args_uint(d, args, "rows", true, 1, 65535, &rows, &e) < 0) {
		res_err(ag, id, &e);
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

void op_close_stdin(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint64_t pid;
	struct sm_err e;
	if (args_uint(d, args, "pid", true, 1, INT32_MAX, &pid, &e) < 0) {
		res_err(ag, id, &e);
		return;
	}
	struct proc *p = spawned(ag, id, pid);
	if (!p)
		return;
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
