/* sm-agent: PID 1 of a supermachine guest. Boots the image (mounts, modules,
 * overlay root, switch root), then serves the agent protocol forever. Run under the
 * name mount.smfs it is the mount helper for live host shares instead (fuse.c). */
#include "fuse.h"
#include "sm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint8_t *read_file_capped(const char *path, size_t cap, size_t *len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	uint8_t *buf = malloc(cap + 1);
	size_t got = 0;
	while (buf && got <= cap) {
		ssize_t n = read(fd, buf + got, cap + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (buf && got > cap) {
		free(buf);
		errno = EFBIG;
		return NULL;
	}
	*len = got;
	return buf;
}

int main(int argc, char **argv)
{
	/* multi-call: /sbin/mount.smfs (a copy of this binary) and /sbin/mount.virtiofs (a symlink to
	 * it) are the mount -t smfs / mount -t virtiofs helper */
	const char *base = argc > 0 && argv[0] ? strrchr(argv[0], '/') : NULL;
	base = base ? base + 1 : (argc > 0 && argv[0] ? argv[0] : "");
	if (fs_is_helper_name(base))
		return fs_mount_helper_main(argc, argv);
	/* Anything but PID 1 must not run the boot (it mounts and switches roots). In a guest,
	 * `/proc/1/exe --version` is a harmless process of a binary every image has: the pool runs it
	 * once in a spare VM to warm the process-start paths before hand-out. */
	if (getpid() != 1) {
		if (argc == 2 && !strcmp(argv[1], "--version")) {
			static const char v[] = "sm-agent " SM_AGENT_VERSION "\n";
			return write(1, v, sizeof(v) - 1) == (ssize_t)(sizeof(v) - 1) ? 0 : 1;
		}
		static const char u[] = "sm-agent: runs as PID 1 of a supermachine guest (or as mount.virtiofs / mount.smfs); "
					"other processes may only ask --version\n";
		ssize_t w = write(2, u, sizeof(u) - 1);
		(void)w;
		return 2;
	}
	int64_t t0 = mono_ms();
	static struct sm_config cfg;
	struct sm_err err;
	int r = boot_early();
	if (r < 0) {
		/* PID 1 cannot go on without /proc and /sys (config, modules, the agent port): say why on
		 * the console and power off, like every other fatal boot problem */
		sm_log("early boot failed: %s; powering off", strerror(-r));
		sm_poweroff();
	}
	size_t len = 0;
	uint8_t *raw = read_file_capped("/sm/config.cbor", SM_CONFIG_MAX_BYTES, &len);
	if (!raw) {
		sm_log("config: /sm/config.cbor: %s", strerror(errno));
		sm_poweroff();
	}
	if (config_parse(raw, len, &cfg, &err) < 0) {
		sm_log("%s", err.msg);
		sm_poweroff();
	}
	free(raw);
	if (boot_root(&cfg) < 0) {
		sm_log("cannot mount the root filesystem; powering off");
		sm_poweroff();
	}
	boot_system(&cfg);
	int64_t boot_ms = mono_ms() - t0;
	sm_log("ready in %lld ms (kernel uptime %lld ms)", (long long)boot_ms, (long long)mono_ms());
	agent_run(&cfg, boot_ms < 0 ? 0 : boot_ms);
	sm_log("agent loop ended; powering off");
	sm_poweroff();
}
