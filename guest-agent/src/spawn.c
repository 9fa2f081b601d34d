/* Starting commands: argv/env/cwd/user of a request (child_spec), the child side (cgroup, egress
 * trap, signals, user switch, PATH search), the vfork-style clone, pipes and ptys. */
#include "agent_int.h"
#include "egress.h"
#include "fuse.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

static void strv_free(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}

void spec_free(struct child_spec *s)
{
	if (!s)
		return;
	strv_free(s->argv);
	strv_free(s->envp);
	free(s->cwd);
	free(s);
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

const char *env_lookup(char **envp, const char *key)
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
pid_t spawn_child(struct agent *ag, struct child_spec *s, int in, int out, int err, bool tty, int slave,
		  bool new_session)
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

char *item_strdup(const struct cb_doc *d, int i)
{
	return strndup((const char *)cb_ptr(d, (uint32_t)i), d->items[i].len);
}

/* Materialise argv/env/cwd/user of a command into *out: 0, or -errno with e. */
int build_spec(struct agent *ag, const struct cb_doc *d, const struct cmd_args *c, struct child_spec **out,
	       struct sm_err *e)
{
	*out = NULL;
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
		int er = errno == ENOENT || !errno ? ENOENT : errno;
		if (stat(s->cwd, &st) == 0)
			er = ENOTDIR;
		sm_err_fmt(e, errno_code(er), "cwd %.300s: does not exist or is not a directory", s->cwd);
		spec_free(s);
		return -er;
	}
	char user[256] = "0:0";
	if (c->user >= 0) {
		memcpy(user, cb_ptr(d, (uint32_t)c->user), d->items[c->user].len);
		user[d->items[c->user].len] = 0;
	}
	struct sm_err ue;
	if (resolve_user("", user, &s->user, &ue) < 0) {
		spec_free(s);
		return sm_err_set(e, EINVAL, "EINVAL", "user: %s", ue.msg);
	}
	*out = s;
	return 0;
nomem:
	spec_free(s);
	return sm_err_set(e, ENOMEM, "ENOMEM", "out of memory");
}

int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Fork one command. Returns pid or -errno; outfd, errfd, infd get the parent's
 * ends (nonblocking, cloexec), -1 where not requested. */
static int neg_errno(void) { return -(errno ? errno : EIO); }

pid_t start_child(struct agent *ag, struct child_spec *s, bool tty, uint16_t cols, uint16_t rows, bool want_in,
		  int *outfd, int *errfd, int *infd, int *ptyfd)
{
	_cleanup_close_ int out_r = -1, out_w = -1, err_r = -1, err_w = -1, in_r = -1, in_w = -1;
	_cleanup_close_ int master = -1, slave = -1, nul = -1;
	int p[2];
	*outfd = *errfd = *infd = *ptyfd = -1;
	if (tty) {
		master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
			return neg_errno();
		char name[64];
		if (ptsname_r(master, name, sizeof(name)) != 0)
			return neg_errno();
		slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (slave < 0)
			return neg_errno();
		struct winsize ws = {.ws_row = rows, .ws_col = cols};
		ioctl(master, TIOCSWINSZ, &ws);
	} else {
		if (pipe2(p, O_CLOEXEC) < 0)
			return neg_errno();
		out_r = p[0], out_w = p[1];
		if (pipe2(p, O_CLOEXEC) < 0)
			return neg_errno();
		err_r = p[0], err_w = p[1];
		if (want_in) {
			if (pipe2(p, O_CLOEXEC) < 0)
				return neg_errno();
			in_r = p[0], in_w = p[1];
		} else {
			nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
			if (nul < 0)
				return neg_errno();
		}
	}
	pid_t pid = spawn_child(ag, s, want_in ? in_r : nul, out_w, err_w, tty, slave, false);
	if (pid < 0)
		return neg_errno();
	/* the child's ends (slave, out_w, err_w, in_r, nul) are closed on return */
	if (tty) {
		set_nonblock(master);
		*ptyfd = fcntl(master, F_DUPFD_CLOEXEC, 3);
		if (want_in)
			*infd = fcntl(master, F_DUPFD_CLOEXEC, 3);
		*outfd = sm_take_fd(&master);
	} else {
		set_nonblock(out_r);
		set_nonblock(err_r);
		*outfd = sm_take_fd(&out_r);
		*errfd = sm_take_fd(&err_r);
		if (want_in) {
			set_nonblock(in_w);
			*infd = sm_take_fd(&in_w);
		}
	}
	return pid;
}
