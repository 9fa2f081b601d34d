/* PID 1 boot path: early mounts, kernel modules, overlay root, switch root,
 * hostname, loopback, static network, volumes, power off. */
#include "sm.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int sm_debug;

int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sm_log(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n = snprintf(buf, sizeof(buf), "sm-agent: ");
	va_start(ap, fmt);
	int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof(buf) - 2)
		len = sizeof(buf) - 2;
	buf[len++] = '\n';
	ssize_t w = write(2, buf, len);
	(void)w;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[512];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = 0;
			if (mkdir(tmp, mode) < 0 && errno != EEXIST)
				return -errno;
			*p = '/';
		}
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
		    const char *data)
{
	mkdir_p(dst, 0755);
	if (mount(src, dst, type, flags, data) < 0) {
		int e = errno;
		if (e != EBUSY)
			sm_log("mount %s on %s (%s) failed: %s", src, dst, type ? type : "-", strerror(e));
		return -e;
	}
	return 0;
}

static void ensure_stdio(void)
{
	if (fcntl(0, F_GETFD) >= 0 && fcntl(1, F_GETFD) >= 0 && fcntl(2, F_GETFD) >= 0)
		return;
	int fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd < 0)
		fd = open("/dev/null", O_RDWR);
	if (fd < 0)
		return;
	for (int i = 0; i < 3; i++)
		if (fcntl(i, F_GETFD) < 0)
			dup2(fd, i);
	if (fd > 2)
		close(fd);
}

/* Module parameters given on the kernel command line as <module>.<param>=<value>
 * (e.g. virtio_mmio.device=... that QEMU microvm appends with acpi=off): modprobe
 * normally forwards them; we do it ourselves. */
static void module_params(const char *file, char *out, size_t cap)
{
	char mod[128];
	out[0] = 0;
	snprintf(mod, sizeof(mod), "%.100s", file);
	char *dot = strstr(mod, ".ko");
	if (dot)
		*dot = 0;
	for (char *p = mod; *p; p++)
		if (*p == '-')
			*p = '_';
	static char cmdline[4096];
	if (sm_read_text("/proc/cmdline", cmdline, sizeof(cmdline)) <= 0)
		return;
	size_t ml = strlen(mod), used = 0;
	char *save = NULL;
	for (char *tok = strtok_r(cmdline, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
		char norm[160];
		snprintf(norm, sizeof(norm), "%.*s", (int)ml, tok);
		for (char *p = norm; *p; p++)
			if (*p == '-')
				*p = '_';
		if (strlen(tok) <= ml + 1 || strcmp(norm, mod) != 0 || tok[ml] != '.')
			continue;
		size_t tl = strlen(tok + ml + 1);
		if (used + tl + 2 > cap)
			break;
		if (used)
			out[used++] = ' ';
		memcpy(out + used, tok + ml + 1, tl);
		used += tl;
		out[used] = 0;
	}
}

static int load_module(const char *name)
{
	char path[300];
	snprintf(path, sizeof(path), "/sm/modules/%.255s", name);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		sm_log("module %s: cannot open: %s", path, strerror(errno));
		return -errno;
	}
	char params[1024];
	module_params(name, params, sizeof(params));
	long r = syscall(SYS_finit_module, fd, params, 0);
	int e = errno;
	unlink(path); /* frees the initramfs copy: it would otherwise live in every snapshot */
	if (r < 0 && e != EEXIST) {
		sm_log("module %s: finit_module failed: %s", name, strerror(e));
		return -e;
	}
	return 0;
}

static void load_modules(void)
{
	FILE *f = fopen("/sm/modules.order", "re");
	if (!f)
		return;
	char line[256];
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = 0;
		char *name = line;
		while (*name == ' ' || *name == '\t')
			name++;
		if (!*name || *name == '#' || strchr(name, '/'))
			continue;
		load_module(name);
	}
	fclose(f);
}

int boot_early(void)
{
	/* fds 0-2 may be closed when the initramfs has no /dev/console */
	mkdir("/dev", 0755);
	if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") < 0 && errno != EBUSY)
		ensure_stdio();
	ensure_stdio();
	/* Without /proc and /sys nothing after this works (the command line, modules, the agent port):
	 * EBUSY (already mounted) is fine, any other failure is returned after the module loading. */
	int rp = do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	int rs = do_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	char cmd[4096];
	if (sm_read_text("/proc/cmdline", cmd, sizeof(cmd)) >= 0)
		sm_debug = strstr(cmd, "sm.debug") != NULL;
	load_modules();
	if (rp < 0 && rp != -EBUSY)
		return rp;
	if (rs < 0 && rs != -EBUSY)
		return rs;
	return 0;
}

/* Wait for a block device node: virtio probing is asynchronous after insmod. */
static int wait_for_path(const char *path, int timeout_ms)
{
	int64_t end = mono_ms() + timeout_ms;
	struct timespec ts = {0, 2 * 1000 * 1000};
	while (access(path, F_OK) < 0) {
		if (mono_ms() > end)
			return -ENOENT;
		nanosleep(&ts, NULL);
	}
	return 0;
}

int boot_root(const struct sm_config *c)
{
	char opts[256];
	if (wait_for_path(c->root_device, 10000) < 0) {
		char devs[512] = "";
		DIR *d = opendir("/sys/bus/virtio/devices");
		struct dirent *de;
		size_t used = 0;
		while (d && (de = readdir(d)) && used < sizeof(devs) - 64) {
			if (de->d_name[0] == '.')
				continue;
			char p[300], id[32] = "?";
			snprintf(p, sizeof(p), "/sys/bus/virtio/devices/%.64s/device", de->d_name);
			if (sm_read_text(p, id, sizeof(id)) >= 0)
				id[strcspn(id, "\n")] = 0;
			used += (size_t)snprintf(devs + used, sizeof(devs) - used, " %.32s(id %.16s)", de->d_name, id);
		}
		if (d)
			closedir(d);
		sm_log("root device %s did not appear; virtio devices:%s", c->root_device, devs[0] ? devs : " none");
		return -ENOENT;
	}
	if (do_mount(c->root_device, "/sm/lower", "squashfs", MS_RDONLY, NULL) < 0)
		return -EIO;
	if (c->tmpfs_mib)
		snprintf(opts, sizeof(opts), "size=%um,mode=0755", c->tmpfs_mib);
	else
		snprintf(opts, sizeof(opts), "mode=0755");
	if (do_mount("tmpfs", "/sm/rw", "tmpfs", 0, opts) < 0)
		return -EIO;
	mkdir("/sm/rw/upper", 0755);
	mkdir("/sm/rw/work", 0755);
	snprintf(opts, sizeof(opts), "lowerdir=/sm/lower,upperdir=/sm/rw/upper,workdir=/sm/rw/work");
	if (do_mount("overlay", "/newroot", "overlay", 0, opts) < 0)
		return -EIO;
	static const char *const moves[] = {"/dev", "/proc", "/sys"};
	for (size_t i = 0; i < sizeof(moves) / sizeof(moves[0]); i++) {
		char dst[64];
		snprintf(dst, sizeof(dst), "/newroot%s", moves[i]);
		mkdir_p(dst, 0755);
		if (mount(moves[i], dst, NULL, MS_MOVE, NULL) < 0) {
			sm_log("move %s: %s", moves[i], strerror(errno));
			return -EIO;
		}
	}
	unlink("/init"); /* the running image stays mapped; the initramfs copy is freed */
	if (chdir("/newroot") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
	    chdir("/") < 0) {
		sm_log("switch root: %s", strerror(errno));
		return -EIO;
	}
	do_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5");
	if (access("/dev/ptmx", F_OK) < 0 && symlink("pts/ptmx", "/dev/ptmx") < 0)
		sm_log("/dev/ptmx: %s", strerror(errno));
	do_mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	mkdir_p("/tmp", 01777);
	mkdir_p("/run", 0755);
	return 0;
}

static int if_up(int s, const char *name)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return -errno;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		return -errno;
	return 0;
}

static void set_addr(struct sockaddr *sa, in_addr_t a)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)sa;
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = a;
}

static void net_config(const struct sm_config *c, int s)
{
	char ip[64];
	snprintf(ip, sizeof(ip), "%s", c->net_ip);
	int prefix = 24;
	char *slash = strchr(ip, '/');
	if (slash) {
		*slash = 0;
		prefix = atoi(slash + 1);
		if (prefix < 0 || prefix > 32)
			prefix = 24;
	}
	struct in_addr addr, gw;
	if (inet_pton(AF_INET, ip, &addr) != 1) {
		sm_log("network: bad ip %s", c->net_ip);
		return;
	}
	char dev[IFNAMSIZ] = "";
	int64_t end = mono_ms() + 3000;
	while (!dev[0] && mono_ms() < end) {
		DIR *d = opendir("/sys/class/net");
		struct dirent *de;
		while (d && (de = readdir(d))) {
			if (de->d_name[0] == '.' || !strcmp(de->d_name, "lo") || strlen(de->d_name) >= IFNAMSIZ)
				continue;
			if (!dev[0] || strcmp(de->d_name, dev) < 0)
				snprintf(dev, sizeof(dev), "%s", de->d_name);
		}
		if (d)
			closedir(d);
		if (!dev[0]) {
			struct timespec ts = {0, 5 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
	}
	if (!dev[0]) {
		sm_log("network: no network interface besides lo");
		return;
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", dev);
	set_addr(&ifr.ifr_addr, addr.s_addr);
	if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
		sm_log("network: SIOCSIFADDR: %s", strerror(errno));
	in_addr_t mask = prefix ? htonl(0xffffffffu << (32 - prefix)) : 0;
	set_addr(&ifr.ifr_netmask, mask);
	if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
		sm_log("network: SIOCSIFNETMASK: %s", strerror(errno));
	if (if_up(s, dev) < 0)
		sm_log("network: cannot bring %s up", dev);
	if (c->net_gw[0] && inet_pton(AF_INET, c->net_gw, &gw) == 1) {
		struct rtentry rt;
		memset(&rt, 0, sizeof(rt));
		set_addr(&rt.rt_dst, 0);
		set_addr(&rt.rt_genmask, 0);
		set_addr(&rt.rt_gateway, gw.s_addr);
		rt.rt_flags = RTF_UP | RTF_GATEWAY;
		rt.rt_dev = dev;
		if (ioctl(s, SIOCADDRT, &rt) < 0)
			sm_log("network: default route: %s", strerror(errno));
	}
	if (c->net_dns[0]) {
		_cleanup_close_ int fd = open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			char line[96];
			int n = snprintf(line, sizeof(line), "nameserver %s\n", c->net_dns);
			if (write(fd, line, (size_t)n) < 0)
				sm_log("network: resolv.conf: %s", strerror(errno));
		}
	}
}

/* SPEC 12: blank = the first 64 KiB are all zero */
static bool device_blank(const char *dev)
{
	static uint8_t buf[65536];
	_cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf));
	if (n != (ssize_t)sizeof(buf))
		return false;
	for (size_t i = 0; i < sizeof(buf); i++)
		if (buf[i])
			return false;
	return true;
}

/* Formatting uses the image's own mke2fs (the agent carries no mkfs code). */
static bool format_ext4(const char *dev)
{
	static const char *const tools[] = {"/sbin/mke2fs", "/usr/sbin/mke2fs", "/sbin/mkfs.ext4",
					    "/usr/sbin/mkfs.ext4"};
	for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++) {
		if (access(tools[i], X_OK) < 0)
			continue;
		int64_t t0 = mono_ms();
		pid_t pid = fork();
		if (pid == 0) {
			execl(tools[i], tools[i], "-q", "-F", "-t", "ext4", dev, (char *)NULL);
			_exit(127);
		}
		int st = 0;
		if (pid < 0 || waitpid(pid, &st, 0) < 0) {
			sm_log("volume %s: cannot run %s: %s", dev, tools[i], strerror(errno));
			return false;
		}
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
			sm_log("volume %s: formatted ext4 with %s in %lld ms", dev, tools[i],
			       (long long)(mono_ms() - t0));
			return true;
		}
		if (WIFSIGNALED(st))
			sm_log("volume %s: %s failed (killed by signal %d)", dev, tools[i], WTERMSIG(st));
		else
			sm_log("volume %s: %s failed (exit status %d)", dev, tools[i], WEXITSTATUS(st));
		return false;
	}
	sm_log("volume %s: blank device and no mke2fs/mkfs.ext4 in the image (/sbin, /usr/sbin): cannot format",
	       dev);
	return false;
}

int sm_work_cgroup_fd = -1;

static bool write_str(const char *path, const char *value)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	return write(fd, value, strlen(value)) == (ssize_t)strlen(value);
}

uint64_t meminfo_kib(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "re");
	if (!f)
		return 0;
	char line[128];
	uint64_t kib = 0;
	size_t kl = strlen(key);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			kib = strtoull(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return kib;
}

/* Commands and the image's workload run in the cgroup "sm-work": a capped number of tasks (a fork
 * bomb gets EAGAIN instead of the guest's memory) and a small CPU weight against the agent, which
 * stays in the root cgroup, so the agent keeps answering however busy the guest is. Without cgroup2
 * (or with the controllers missing) commands run as before. */
static void work_cgroup(void)
{
	mkdir_p("/sys/fs/cgroup", 0755);
	/* favordynmods: moving a process between cgroups without waiting for an RCU grace period (every
	 * command is moved once, on the exec path) */
	if (mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, "favordynmods") < 0 &&
	    mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 &&
	    errno != EBUSY) {
		sm_log("cgroup2: %s; commands run without a task cap", strerror(errno));
		return;
	}
	if (!write_str("/sys/fs/cgroup/cgroup.subtree_control", "+pids +cpu +memory"))
		sm_log("cgroup controllers pids/cpu/memory: %s", strerror(errno));
	if (mkdir("/sys/fs/cgroup/sm-work", 0755) < 0 && errno != EEXIST) {
		sm_log("cgroup sm-work: %s", strerror(errno));
		return;
	}
	/* A task costs the kernel ~120 KiB (page tables, stack, structures: measured with a shell fork
	 * bomb under the Debian cloud kernel), and the kernel's own per-task memory is not all charged to
	 * memory.max below, so the task cap is what keeps a runaway inside the guest's memory: 3 tasks
	 * per MiB available (~550 in a 256 MiB guest, ~40% of its memory), 256..32768. */
	unsigned long mib = (unsigned long)(meminfo_kib("MemTotal") >> 10);
	unsigned long avail = (unsigned long)(meminfo_kib("MemAvailable") >> 10);
	unsigned long tasks = avail * 3 < 256 ? 256 : avail * 3 > 32768 ? 32768 : avail * 3;
	char buf[32];
	snprintf(buf, sizeof(buf), "%lu", tasks);
	if (!write_str("/sys/fs/cgroup/sm-work/pids.max", buf))
		sm_log("sm-work pids.max: %s", strerror(errno));
	if (!write_str("/sys/fs/cgroup/sm-work/cpu.weight", "10"))
		sm_log("sm-work cpu.weight: %s", strerror(errno));
	/* what is available now (the kernel, its caches and the agent already hold the rest) less a
	 * reserve of 1/16 of the memory (8..32 MiB): a runaway meets the OOM killer inside sm-work
	 * instead of the whole guest stalling in reclaim with the agent in it */
	unsigned long reserve = mib / 16 < 8 ? 8 : mib / 16 > 32 ? 32 : mib / 16;
	if (avail > reserve * 2) {
		snprintf(buf, sizeof(buf), "%luM", avail - reserve);
		if (!write_str("/sys/fs/cgroup/sm-work/memory.max", buf))
			sm_log("sm-work memory.max: %s", strerror(errno));
	}
	sm_work_cgroup_fd = open("/sys/fs/cgroup/sm-work/cgroup.procs", O_WRONLY | O_CLOEXEC);
	if (sm_work_cgroup_fd < 0)
		sm_log("sm-work cgroup.procs: %s", strerror(errno));
}

/* An idle pooled VM waits frozen: the host stops its VMM process and the guest's clock runs on
 * (it follows the host's). When the VM continues, the kernel's lockup detectors see one long stall
 * and report it ("BUG: soft lockup", an RCU CPU stall) though nothing in the guest hung; those
 * reports are turned off. A kernel built without a detector has no file for it: nothing to do. */
static void quiet_stall_reports(void)
{
	static const char *const knobs[][2] = {
		{"/proc/sys/kernel/watchdog", "0"}, /* soft and hard lockup detectors */
		{"/sys/module/rcupdate/parameters/rcu_cpu_stall_suppress", "1"},
	};
	for (size_t i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++)
		if (access(knobs[i][0], F_OK) == 0 && !write_str(knobs[i][0], knobs[i][1]))
			sm_log("%s: %s", knobs[i][0], strerror(errno));
}

void boot_system(const struct sm_config *c)
{
	quiet_stall_reports();
	if (sethostname(c->hostname, strlen(c->hostname)) < 0)
		sm_log("sethostname: %s", strerror(errno));
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s >= 0) {
		if (if_up(s, "lo") < 0)
			sm_log("loopback up failed");
		if (c->has_net)
			net_config(c, s);
		close(s);
	}
	for (int i = 0; i < c->nvolumes; i++) {
		const struct sm_volume *v = &c->volumes[i];
		if (wait_for_path(v->device, 5000) < 0) {
			sm_log("volume %s: device missing", v->device);
			continue;
		}
		if (v->format && device_blank(v->device) && !format_ext4(v->device)) {
			mkdir_p(v->path, 0755);
			sm_log("volume %s: not formatted, not mounted on %s", v->device, v->path);
			continue;
		}
		if (do_mount(v->device, v->path, "ext4", MS_NOATIME, NULL) < 0)
			sm_log("volume %s: cannot mount on %s%s", v->device, v->path,
			       v->format ? "" : " (format:false and no ext4 filesystem?)");
	}
	if (!write_str("/proc/self/oom_score_adj", "-1000"))
		sm_log("oom_score_adj: %s", strerror(errno));
	work_cgroup();
}

static void unmount_all(void)
{
	/* read mounts, unmount in reverse order; detach what stays busy */
	char *paths[128];
	int n = 0;
	FILE *f = fopen("/proc/mounts", "re");
	if (f) {
		char line[512];
		while (n < 128 && fgets(line, sizeof(line), f)) {
			char *sp1 = strchr(line, ' ');
			if (!sp1)
				continue;
			char *p = sp1 + 1;
			char *sp2 = strchr(p, ' ');
			if (!sp2)
				continue;
			*sp2 = 0;
			paths[n] = strdup(p);
			if (paths[n])
				n++;
		}
		fclose(f);
	}
	for (int i = n - 1; i >= 0; i--) {
		if (strcmp(paths[i], "/") && strcmp(paths[i], "/proc") && strcmp(paths[i], "/sys") &&
		    strcmp(paths[i], "/dev"))
			if (umount2(paths[i], 0) < 0)
				umount2(paths[i], MNT_DETACH);
		free(paths[i]);
	}
	mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
}

void sm_poweroff(void)
{
	if (getpid() != 1) {
		/* host-side tests: never signal every process or reboot a machine we do not own */
		sm_log("not PID 1: exiting instead of powering off");
		_exit(0);
	}
	sync();
	kill(-1, SIGTERM);
	int64_t end = mono_ms() + 2000;
	struct timespec ts = {0, 10 * 1000 * 1000};
	while (mono_ms() < end) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if (waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD)
			break;
		nanosleep(&ts, NULL);
	}
	kill(-1, SIGKILL);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	sync();
	unmount_all();
	sync();
	/* Without ACPI (microvm acpi=off) or PSCI there is no power-off device: the kernel
	 * would turn POWER_OFF into HALT and QEMU would keep running. A reboot with
	 * reboot=t and QEMU's -no-reboot ends the VM instead. */
	bool can_power_off = access("/sys/firmware/acpi", F_OK) == 0 ||
			     access("/sys/firmware/devicetree/base/psci", F_OK) == 0;
	reboot(can_power_off ? RB_POWER_OFF : RB_AUTOBOOT);
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}
