/* Guest egress (SPEC 6.5): every command's connect(2) is trapped with a seccomp user
 * notification; TCP to a non-loopback address is dialled by the host and relayed over a
 * channel. The VM has no network device, so nothing here is needed for containment: an
 * untrapped or continued connect to a non-loopback address simply has no route. */
#ifndef SM_EGRESS_H
#define SM_EGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define EG_ADDR_MAX 46 /* INET6_ADDRSTRLEN */

/* A trapped connect the host must decide on. sock: the caller's socket (same open file
 * description, from pidfd_getfd), owned by whoever took the notification. */
struct eg_target {
	uint64_t notif;
	pid_t pid;
	int sock;
	int family;
	char addr[EG_ADDR_MAX];
	uint16_t port;
};

/* Child side, before execve and before dropping privileges: install the connect filter and
 * pass its listener to the agent over send_fd (a datagram socket). 0 or -1 (then the child
 * runs without the trap: its non-loopback connects fail for lack of a route). */
int eg_child_install(int send_fd);
/* Agent side: one listener fd passed by a child, or -1 when none is queued. */
int eg_recv_listener(int sock);
/* Take one notification from lfd. 1 = the host must decide (t filled), 0 = handled here
 * (continued: not TCP, loopback, unreadable address...), -1 = nothing to take. */
int eg_notif_take(int lfd, struct eg_target *t);
bool eg_notif_valid(int lfd, uint64_t id);
/* Answer a notification: err 0 = connect returned 0, else connect fails with -err. */
int eg_notif_answer(int lfd, uint64_t id, int err);
/* Connect sock (the caller's socket) to the agent's loopback relay listener and return the
 * agent's end of that connection (nonblocking, cloexec), or -errno. */
int eg_relay_connect(int sock, int family);
/* The DNS stub: UDP 127.0.0.53:53, nonblocking; -1 when it cannot be bound. */
int eg_dns_open(void);
/* /etc/resolv.conf -> the stub (replaces a symlink or an existing file). */
void eg_resolv_write(void);
/* errno for a host refusal code ("ECONNREFUSED", "EACCES", ...); ECONNREFUSED if unknown. */
int eg_errno_of(const char *code, size_t n);

#endif
