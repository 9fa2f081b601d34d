/* Guest egress: seccomp user-notification capture of connect(2), the loopback relay and the
 * DNS stub (SPEC 6.5). Kernel ABI values are defined here because musl ships no kernel
 * headers (seccomp(2), seccomp_unotify(2), pidfd_getfd(2)). */
#include "egress.h"
#include "sm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define EG_SET_MODE_FILTER 1
#define EG_FLAG_NEW_LISTENER (1UL << 3)
#define EG_RET_USER_NOTIF 0x7fc00000U
#define EG_RET_ALLOW 0x7fff0000U
#define EG_FLAG_CONTINUE (1U << 0)

#if defined(__x86_64__)
#define EG_AUDIT_ARCH 0xC000003EU
#elif defined(__aarch64__)
#define EG_AUDIT_ARCH 0xC00000B7U
#else
#error "egress: unsupported architecture"
#endif

struct eg_seccomp_data {
	int32_t nr;
	uint32_t arch;
	uint64_t ip;
	uint64_t args[6];
};
struct eg_notif {
	uint64_t id;
	uint32_t pid;
	uint32_t flags;
	struct eg_seccomp_data data;
};
struct eg_notif_resp {
	uint64_t id;
	int64_t val;
	int32_t error;
	uint32_t flags;
};
#define EG_IOC_RECV _IOWR('!', 0, struct eg_notif)
#define EG_IOC_SEND _IOWR('!', 1, struct eg_notif_resp)
#define EG_IOC_ID_VALID _IOW('!', 2, uint64_t)

struct eg_insn {
	uint16_t code;
	uint8_t jt, jf;
	uint32_t k;
};
struct eg_prog {
	unsigned short len;
	struct eg_insn *filter;
};
#define EG_LD_W_ABS 0x20
#define EG_JEQ_K 0x15
#define EG_RET_K 0x06

#define EG_RELAY_WAIT_MS 500

int eg_child_install(int send_fd)
{
	/* arch must match (else allow: another ABI's connect has no route either); nr == connect → notify */
	struct eg_insn f[] = {
		{EG_LD_W_ABS, 0, 0, 4},
		{EG_JEQ_K, 0, 3, EG_AUDIT_ARCH},
		{EG_LD_W_ABS, 0, 0, 0},
		{EG_JEQ_K, 0, 1, (uint32_t)SYS_connect},
		{EG_RET_K, 0, 0, EG_RET_USER_NOTIF},
		{EG_RET_K, 0, 0, EG_RET_ALLOW},
	};
	struct eg_prog prog = {.len = (unsigned short)(sizeof(f) / sizeof(f[0])), .filter = f};
	long lfd = syscall(SYS_seccomp, EG_SET_MODE_FILTER, EG_FLAG_NEW_LISTENER, &prog);
	if (lfd < 0)
		return -1;
	char cbuf[CMSG_SPACE(sizeof(int))];
	memset(cbuf, 0, sizeof(cbuf));
	char b = 'L';
	struct iovec iov = {.iov_base = &b, .iov_len = 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	int fdv = (int)lfd;
	memcpy(CMSG_DATA(c), &fdv, sizeof(int));
	/* Never block here: if the agent's queue is full the listener is lost, the filter stays and
	 * every trapped connect of this process tree then fails (ENOSYS): closed, not open. */
	ssize_t r = sendmsg(send_fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	close(fdv);
	return r == 1 ? 0 : -1;
}

int eg_recv_listener(int sock)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	char b;
	struct iovec iov = {.iov_base = &b, .iov_len = 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	ssize_t r = recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (r < 0)
		return -1;
	int got = -2; /* a datagram without a listener: skip it */
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (got < 0)
				got = fd;
			else
				close(fd);
		}
	}
	return got;
}

bool eg_notif_valid(int lfd, uint64_t id) { return ioctl(lfd, EG_IOC_ID_VALID, &id) == 0; }

int eg_notif_answer(int lfd, uint64_t id, int err)
{
	struct eg_notif_resp r = {.id = id, .val = 0, .error = err ? -err : 0, .flags = 0};
	return ioctl(lfd, EG_IOC_SEND, &r);
}

static void notif_continue(int lfd, uint64_t id)
{
	struct eg_notif_resp r = {.id = id, .val = 0, .error = 0, .flags = EG_FLAG_CONTINUE};
	ioctl(lfd, EG_IOC_SEND, &r);
}

static bool v4_local(const uint8_t *a)
{
	return a[0] == 127 || (a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0);
}

int eg_notif_take(int lfd, struct eg_target *t)
{
	struct eg_notif n;
	memset(&n, 0, sizeof(n));
	if (ioctl(lfd, EG_IOC_RECV, &n) < 0)
		return -1;
	uint64_t len = n.data.args[2];
	if (n.data.nr != (int32_t)SYS_connect || len < sizeof(sa_family_t) || len > 128) {
		notif_continue(lfd, n.id);
		return 0;
	}
	/* The address as the caller passed it (bounded read). Continuing on the basis of what we
	 * read is racy (the caller may change its memory); that is harmless here, because what a
	 * continued connect can reach is the guest's own loopback. */
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
		uint8_t raw[128];
	} u;
	memset(&u, 0, sizeof(u));
	struct iovec lo = {.iov_base = &u, .iov_len = (size_t)len};
	struct iovec re = {.iov_base = (void *)(uintptr_t)n.data.args[1], .iov_len = (size_t)len};
	if (syscall(SYS_process_vm_readv, (long)n.pid, &lo, 1L, &re, 1L, 0L) != (long)len) {
		notif_continue(lfd, n.id); /* the kernel answers EFAULT */
		return 0;
	}
	memset(t, 0, sizeof(*t));
	t->notif = n.id;
	t->pid = (pid_t)n.pid;
	t->sock = -1;
	uint8_t v4[4];
	if (u.sa.sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		memcpy(v4, &u.in4.sin_addr, 4);
		if (v4_local(v4))
			goto cont;
		inet_ntop(AF_INET, v4, t->addr, sizeof(t->addr));
		t->port = ntohs(u.in4.sin_port);
	} else if (u.sa.sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const uint8_t *a = u.in6.sin6_addr.s6_addr;
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		static const uint8_t zero[16];
		if (!memcmp(a, mapped, 12)) {
			if (v4_local(a + 12))
				goto cont;
			inet_ntop(AF_INET, a + 12, t->addr, sizeof(t->addr));
		} else {
			if (!memcmp(a, zero, 16) || (!memcmp(a, zero, 15) && a[15] == 1))
				goto cont; /* :: and ::1 */
			inet_ntop(AF_INET6, a, t->addr, sizeof(t->addr));
		}
		t->port = ntohs(u.in6.sin6_port);
	} else {
		goto cont; /* AF_UNIX, netlink, vsock...: not ours */
	}
	if (t->port == 0)
		goto cont; /* the kernel refuses it */
	int pidfd = (int)syscall(SYS_pidfd_open, (long)n.pid, 0L);
	if (pidfd < 0)
		goto cont;
	t->sock = (int)syscall(SYS_pidfd_getfd, (long)pidfd, (long)n.data.args[0], 0L);
	close(pidfd);
	if (t->sock < 0)
		goto cont; /* EBADF and friends come from the kernel then */
	int type = 0, proto = 0, dom = 0;
	socklen_t l = sizeof(int);
	if (getsockopt(t->sock, SOL_SOCKET, SO_TYPE, &type, &l) < 0 || type != SOCK_STREAM)
		goto cont;
	l = sizeof(int);
	if (getsockopt(t->sock, SOL_SOCKET, SO_PROTOCOL, &proto, &l) < 0 || proto != IPPROTO_TCP)
		goto cont;
	l = sizeof(int);
	if (getsockopt(t->sock, SOL_SOCKET, SO_DOMAIN, &dom, &l) < 0 || (dom != AF_INET && dom != AF_INET6))
		goto cont;
	t->family = dom;
	/* seccomp_unotify(2): the target may have died and its id been reused meanwhile */
	if (!eg_notif_valid(lfd, n.id)) {
		close(t->sock);
		t->sock = -1;
		return 0;
	}
	return 1;
cont:
	if (t->sock >= 0)
		close(t->sock);
	t->sock = -1;
	notif_continue(lfd, n.id);
	return 0;
}

/* Lazily created relay listeners on 127.0.0.1 and ::1 (ephemeral ports). */
static int relay4 = -1, relay6 = -1;

static int relay_listener(int family)
{
	int *slot = family == AF_INET6 ? &relay6 : &relay4;
	if (*slot >= 0)
		return *slot;
	int s = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	int r;
	if (family == AF_INET6) {
		struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
		int one = 1;
		setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		r = bind(s, (struct sockaddr *)&a, sizeof(a));
	} else {
		struct sockaddr_in a = {.sin_family = AF_INET};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		r = bind(s, (struct sockaddr *)&a, sizeof(a));
	}
	if (r < 0 || listen(s, 256) < 0) {
		close(s);
		return -1;
	}
	*slot = s;
	return s;
}

static uint16_t sock_port(int s, bool peer)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);
	if ((peer ? getpeername(s, (struct sockaddr *)&ss, &l) : getsockname(s, (struct sockaddr *)&ss, &l)) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

int eg_relay_connect(int sock, int family)
{
	int ls = relay_listener(family);
	if (ls < 0 && family == AF_INET6)
		ls = relay_listener(AF_INET), family = AF_INET; /* v4-mapped, unless the socket is v6-only */
	if (ls < 0)
		return -EADDRNOTAVAIL;
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);
	if (getsockname(ls, (struct sockaddr *)&ss, &l) < 0)
		return -errno;
	if (family == AF_INET && ss.ss_family == AF_INET) {
		/* an AF_INET6 socket connecting to the v4 listener needs the mapped form */
		int dom = AF_INET;
		socklen_t dl = sizeof(dom);
		getsockopt(sock, SOL_SOCKET, SO_DOMAIN, &dom, &dl);
		if (dom == AF_INET6) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
			struct sockaddr_in6 m = {.sin6_family = AF_INET6, .sin6_port = s4->sin_port};
			m.sin6_addr.s6_addr[10] = m.sin6_addr.s6_addr[11] = 0xff;
			memcpy(&m.sin6_addr.s6_addr[12], &s4->sin_addr, 4);
			memcpy(&ss, &m, sizeof(m));
			l = sizeof(m);
		}
	}
	/* The caller is parked in connect(2), so it cannot see the flag change on its file. */
	int fl = fcntl(sock, F_GETFL);
	if (fl < 0)
		return -errno;
	fcntl(sock, F_SETFL, fl | O_NONBLOCK);
	int err = 0;
	if (connect(sock, (struct sockaddr *)&ss, l) < 0) {
		err = errno;
		if (err == EINPROGRESS) {
			struct pollfd p = {.fd = sock, .events = POLLOUT};
			err = poll(&p, 1, EG_RELAY_WAIT_MS) == 1 ? 0 : ETIMEDOUT;
			if (!err) {
				socklen_t el = sizeof(err);
				getsockopt(sock, SOL_SOCKET, SO_ERROR, &err, &el);
			}
		}
	}
	fcntl(sock, F_SETFL, fl);
	if (err)
		return -err;
	uint16_t want = sock_port(sock, false);
	/* Our connection is in the accept queue (loopback completes the handshake at once); a
	 * guest process may have connected to the relay port too: those are dropped. */
	for (int tries = 0; tries < 64; tries++) {
		int a = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (a < 0) {
			if (errno != EAGAIN && errno != EINTR)
				return -errno;
			struct pollfd p = {.fd = ls, .events = POLLIN};
			if (poll(&p, 1, EG_RELAY_WAIT_MS) != 1)
				return -ETIMEDOUT;
			continue;
		}
		if (sock_port(a, true) == want) {
			int one = 1;
			setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			return a;
		}
		close(a);
	}
	return -ECONNREFUSED;
}

int eg_dns_open(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
	a.sin_addr.s_addr = htonl(0x7f000035); /* 127.0.0.53 */
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(s);
		return -1;
	}
	return s;
}

void eg_resolv_write(void)
{
	unlink("/etc/resolv.conf"); /* may be a dangling symlink into /run */
	int fd = open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return;
	static const char line[] = "nameserver 127.0.0.53\noptions timeout:2 attempts:3\n";
	if (write(fd, line, sizeof(line) - 1) < 0)
		sm_log("egress: resolv.conf: %s", strerror(errno));
	close(fd);
}

int eg_errno_of(const char *code, size_t n)
{
	static const struct {
		const char *name;
		int e;
	} m[] = {{"ECONNREFUSED", ECONNREFUSED}, {"EACCES", EACCES},       {"EPERM", EPERM},
		 {"ENETUNREACH", ENETUNREACH},   {"EHOSTUNREACH", EHOSTUNREACH}, {"ETIMEDOUT", ETIMEDOUT},
		 {"ECONNRESET", ECONNRESET},     {"EADDRNOTAVAIL", EADDRNOTAVAIL}};
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (strlen(m[i].name) == n && !memcmp(m[i].name, code, n))
			return m[i].e;
	return ECONNREFUSED;
}
