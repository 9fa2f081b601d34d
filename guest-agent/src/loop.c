/* The event loop: epoll watches, signals (reaping, forwarding), interests per turn, timers,
 * dispatch of ready fds, and the entry points agent_run / agent_serve_fd. */
#include "agent_int.h"
#include "vsock.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int agent_loop(struct agent *ag, struct sm_config *c, int64_t boot_ms, int fd);

void watch_set(struct agent *ag, struct watch *w, uint32_t want)
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

void watch_close(struct agent *ag, struct watch *w)
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

void reap(struct agent *ag)
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

static void sync_interests(struct agent *ag)
{
	bool room = outq_pending(ag) <= SM_OUTQ_SOFT_BYTES && ag->session;
	int64_t now = mono_ms();
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
				r = (room && c->credit > 0 && !(c->tcp && now < c->hold_until)) ? EPOLLIN : 0;
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
		if (c->state != CH_FREE && c->tcp && c->hold_until > now && c->hold_until - now < t)
			t = c->hold_until - now;
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
