/* The image's workload: its start, workload-signal, and the LISTEN poll on its guest port. */
#include "agent_int.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void workload_start(struct agent *ag)
{
	struct sm_config *c = ag->cfg;
	if (!c->has_workload || ag->wl_started)
		return;
	ag->wl_started = true;
	struct child_spec s;
	memset(&s, 0, sizeof(s));
	struct sm_err err;
	if (resolve_user("", c->wl_user, &s.user, &err) < 0) {
		sm_log("workload: %s", err.msg);
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
	pid_t pid;
	{
		_cleanup_close_ int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
		/* new session; child_exec's setpgid is then a no-op, and the console stays 1/2 */
		pid = spawn_child(ag, &s, nul, 1, 2, false, -1, true);
	}
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

void listen_poll(struct agent *ag, int64_t now)
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

void op_workload_signal(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint64_t sig;
	struct sm_err e;
	if (args_uint(d, args, "signum", true, 1, 64, &sig, &e) < 0) {
		res_err(ag, id, &e);
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
