/* Live host shares (SPEC 6.4): the /dev/fuse relay over a channel, orphaned shares,
 * fs-attach / fs-detach and the mount helper install. */
#include "agent_int.h"
#include "fuse.h"
#include "sharebinds.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

/* Whether path lies (lexically) at or below a FUSE mount. PID 1 must not touch such a path
 * itself: the FUSE requests it would cause are relayed by PID 1 (SPEC 6.4), so it would wait
 * for itself. A symlink elsewhere that points into a share is not detected. */
static int contains_path(const char *mp, const char *type, const char *src, void *ctx)
{
	(void)src;
	return fs_fuse_covers(mp, type, ctx) == 1; /* a FUSE mount on / does not count here */
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
void share_orphan(struct share *s)
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
void share_send(struct agent *ag, struct share *s)
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

void share_pump(struct agent *ag, struct share *s)
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
void share_from_host(struct agent *ag, struct chan *c, const uint8_t *p, uint32_t n)
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

bool any_share(struct agent *ag)
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
	_cleanup_close_ int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return;
	mkdir("/sbin", 0755);
	char tmp[64];
	snprintf(tmp, sizeof(tmp), "/sbin/.mount.smfs.%d", (int)getpid());
	_cleanup_close_ int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0755);
	if (out < 0)
		return;
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
	if (fchmod(out, 0755) < 0)
		okw = false;
	if (close(sm_take_fd(&out)) < 0)
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

void op_fs_attach(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	char tag[FS_TAG_MAX + 1], msg[320];
	struct sm_err e;
	uint32_t ch;
	int pi;
	if (args_fs_attach(d, args, tag, &ch, &pi, &e) < 0) {
		res_err(ag, id, &e);
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
	_cleanup_close_ int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENODEV || errno == ENXIO)
			res_error(ag, id, "ENODEV",
				  "/dev/fuse is missing: the guest kernel has no fuse module (the image was built "
				  "without mounts support)");
		else
			res_errno(ag, id, errno, "open /dev/fuse");
		return;
	}
	_cleanup_free_ uint8_t *req = malloc(FS_REQ_BUF);
	_cleanup_free_ uint8_t *rbuf = malloc(FS_REPLY_MAX);
	if (!req || !rbuf) {
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
		int er = r < 0 ? -r : res[1];
		snprintf(msg, sizeof(msg), "fs-attach %s: %s: %s", tag,
			 r < 0 ? "mount helper process" : what[res[0] >= 1 && res[0] <= 4 ? res[0] : 0], strerror(er));
		close(sm_take_fd(&fd)); /* aborts the connection if the mount happened (timeout case) */
		if (r == -ETIMEDOUT) {
			struct fs_job dj = {.kind = 2, .tag = tag};
			int dres[2];
			fs_job_run(&dj, dres);
		}
		res_error(ag, id, errno_code(er), msg);
		return;
	}
	ag->helper_installed = true;
	fs_binds_forget(tag); /* made again (or skipped); the next fs-detach remembers afresh */
	struct chan *c = chan_alloc(ag, ch);
	memset(s, 0, sizeof(*s));
	s->used = true;
	memcpy(s->tag, tag, sizeof(s->tag));
	s->w.kind = W_FUSE;
	s->w.fd = sm_take_fd(&fd);
	s->w.obj = s;
	s->req = sm_take_ptr(req);
	s->path = pi >= 0 ? strdup(path) : NULL; /* NULL on ENOMEM too: then it counts as a user's bind */
	fs_relay_init(&s->relay, sm_take_ptr(rbuf));
	res_empty(ag, id);
	if (!c) { /* checked above; cannot happen */
		share_orphan(s);
		return;
	}
	c->fs = s;
	c->out_open = c->in_open = true;
	s->ch = c;
}

void op_fs_detach(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	char tag[FS_TAG_MAX + 1], msg[256];
	struct sm_err e;
	if (args_tag(d, args, "tag", tag, &e) < 0) {
		res_err(ag, id, &e);
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
