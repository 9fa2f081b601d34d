/* Egress (SPEC 6.5), the agent side: trapped process trees, dial events and dial-answer,
 * the DNS stub's queries and dns-answer. The mechanisms themselves are in egress.c. */
#include "agent_int.h"
#include "egress.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

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

void eg_take_listeners(struct agent *ag)
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

void eg_notified(struct agent *ag, struct eg_lis *l, uint32_t ev)
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

void op_dial_answer(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint32_t dial, ch;
	int ei;
	struct sm_err e;
	if (args_dial_answer(d, args, &dial, &ch, &ei, &e) < 0) {
		res_err(ag, id, &e);
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

void eg_dns_read(struct agent *ag)
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

void op_dns_answer(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint32_t qid;
	int a;
	struct sm_err e;
	if (args_dns_answer(d, args, &qid, &a, &e) < 0) {
		res_err(ag, id, &e);
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

void eg_session_reset(struct agent *ag)
{
	for (int i = 0; i < SM_EG_MAX_DIALS; i++)
		if (ag->eg_dials[i].used)
			eg_dial_fail(&ag->eg_dials[i], ENETUNREACH);
	for (int i = 0; i < SM_EG_MAX_DNS; i++)
		ag->eg_q[i].used = false;
}

void eg_timers(struct agent *ag, int64_t now)
{
	for (int i = 0; i < SM_EG_MAX_DIALS; i++)
		if (ag->eg_dials[i].used && now >= ag->eg_dials[i].deadline)
			eg_dial_fail(&ag->eg_dials[i], ETIMEDOUT);
}

void eg_init(struct agent *ag)
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
