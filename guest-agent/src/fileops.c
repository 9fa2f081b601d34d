/* Files (SPEC 6): write-file, read-file and exec stage files; guarded_fork and the asynchronous
 * file jobs that keep PID 1 from waiting on a path on a live host share. */
#include "agent_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

static void fjob_start(struct agent *ag, uint32_t id, guard_fn fn, void *ctx, char *path, enum fjob_kind kind,
		       size_t cap, size_t limit, struct exec_cont *cont);

int mkdir_parents(const char *path)
{
	char tmp[SM_PATH_MAX_BYTES + 1];
	size_t n = strlen(path);
	if (n >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, path, n + 1);
	char *last = strrchr(tmp, '/');
	if (!last || last == tmp)
		return 0;
	*last = 0;
	for (char *p = tmp + 1;; p++) {
		if (*p == '/' || *p == 0) {
			char c = *p;
			*p = 0;
			if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
				return -errno;
			*p = c;
			if (!c)
				break;
		}
	}
	return 0;
}

int write_whole(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* stage: plain create/truncate (SPEC 6); write-file: temp + rename (atomic). */
static int put_file(const char *path, const uint8_t *data, size_t len, mode_t mode, bool mkdirs, bool atomic,
		    uint32_t seq)
{
	int r;
	if (mkdirs && (r = mkdir_parents(path)) < 0)
		return r;
	struct stat st;
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return -EISDIR;
	char tmp[SM_PATH_MAX_BYTES + 64];
	const char *target = path;
	if (atomic) {
		const char *slash = strrchr(path, '/');
		snprintf(tmp, sizeof(tmp), "%.*s/.sm-tmp-%d-%u", (int)(slash - path), path, (int)getpid(), seq);
		target = tmp;
	}
	{
		_cleanup_close_ int fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
		if (fd < 0)
			return -errno;
		r = write_whole(fd, data, len);
		if (r == 0 && fchmod(fd, mode & 07777) < 0)
			r = -errno;
	} /* closed before the rename */
	if (r == 0 && atomic && rename(target, path) < 0)
		r = -errno;
	if (r < 0 && atomic)
		unlink(target);
	return r;
}

static void pipe_put(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		b += w;
		n -= (size_t)w;
	}
}

ssize_t guarded_fork(guard_fn fn, void *ctx, uint8_t *out, size_t cap)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	_cleanup_close_ int rd = pfd[0], wr = pfd[1];
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		close(sm_take_fd(&rd));
		fn(ctx, wr);
		_exit(0);
	}
	close(sm_take_fd(&wr));
	int64_t end = mono_ms() + FS_HELPER_TIMEOUT_MS;
	size_t got = 0;
	ssize_t r = -ETIMEDOUT;
	for (;;) {
		int64_t left = end - mono_ms();
		if (left <= 0)
			break;
		struct pollfd pf = {.fd = rd, .events = POLLIN};
		int pr = poll(&pf, 1, (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			break;
		uint8_t extra;
		/* at cap, one more byte tells EOF (the answer was exactly cap bytes) from an overflow */
		ssize_t n = got == cap ? read(rd, &extra, 1) : read(rd, out + got, cap - got);
		if (n > 0 && got == cap) {
			r = -EFBIG;
			break;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0) {
			r = (ssize_t)got;
			break;
		}
		got += (size_t)n;
	}
	if (r < 0)
		kill(pid, SIGKILL); /* reap() collects it */
	return r;
}

struct put_ctx {
	const char *path;
	const uint8_t *data;
	size_t len;
	mode_t mode;
	bool mkdirs, atomic;
	uint32_t seq;
};

static void put_child(void *c, int wr)
{
	struct put_ctx *x = c;
	int r = put_file(x->path, x->data, x->len, x->mode, x->mkdirs, x->atomic, x->seq);
	pipe_put(wr, &r, sizeof(r));
}

/* Write the stage files. Runs in PID 1 only while no share is attached; otherwise in a file job's
 * child (stage_child), so a path on (or leading into) a share never makes PID 1 wait on itself. */
int do_stage(const struct cb_doc *d, int stage, struct sm_err *e)
{
	if (stage < 0)
		return 0;
	uint32_t k = (uint32_t)stage + 1;
	for (uint32_t i = 0; i < d->items[stage].count; i++) {
		int pi = cb_map_get(d, k, "path"), di = cb_map_get(d, k, "data");
		int mi = cb_map_get(d, k, "mode");
		mode_t mode = mi >= 0 && d->items[mi].type == CB_UINT ? (mode_t)(d->items[mi].u & 07777) : 0644;
		_cleanup_free_ char *path = item_strdup(d, pi);
		if (!path)
			return sm_err_set(e, ENOMEM, "ENOMEM", "out of memory");
		int r = put_file(path, cb_ptr(d, (uint32_t)di), d->items[di].len, mode, true, false, 0);
		if (r < 0)
			return sm_err_set(e, -r, errno_code(-r), "stage %.300s: %s", path, strerror(-r));
		k = d->items[k].next;
	}
	return 0;
}

struct stage_ctx {
	const struct cb_doc *d;
	int stage;
};

struct stage_out {
	int32_t r;
	char msg[512];
};

static void stage_child(void *c, int wr)
{
	struct stage_ctx *x = c;
	struct stage_out out;
	memset(&out, 0, sizeof(out));
	struct sm_err e = {.code = "EIO"};
	out.r = do_stage(x->d, x->stage, &e);
	snprintf(out.msg, sizeof(out.msg), "%s", e.msg);
	pipe_put(wr, &out, sizeof(out));
}

/* The stage files of exec request id in a file job; k is launched when they are written. Takes what
 * and k. */
void stage_start(struct agent *ag, uint32_t id, const struct cb_doc *d, int stage, char *what, struct exec_cont *k)
{
	struct stage_ctx x = {d, stage};
	fjob_start(ag, id, stage_child, &x, what, FJ_STAGE, sizeof(struct stage_out), 0, k);
}

/* The request's path argument (item pi) on the heap, or NULL with the request answered (ENOMEM). */
static char *req_path(struct agent *ag, uint32_t id, const struct cb_doc *d, int pi)
{
	char *path = item_strdup(d, pi);
	if (!path)
		res_error(ag, id, "ENOMEM", "out of memory");
	return path;
}

void op_write_file(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	int pi, di;
	uint64_t mode = 0644;
	bool mkdirs = true;
	struct sm_err e;
	if (args_path(d, args, "path", &pi, &e) < 0 || args_bytes(d, args, "data", &di, &e) < 0 ||
	    args_uint(d, args, "mode", false, 0, UINT32_MAX, &mode, &e) < 0 ||
	    args_bool(d, args, "mkdirs", true, &mkdirs, &e) < 0) {
		res_err(ag, id, &e);
		return;
	}
	if (d->items[di].len > SM_MAX_FILE_BYTES) {
		res_error(ag, id, "SM_FILE_TOO_LARGE", "data: larger than 4194304 bytes");
		return;
	}
	_cleanup_free_ char *path = req_path(ag, id, d, pi);
	if (!path)
		return;
	const uint8_t *data = cb_ptr(d, (uint32_t)di);
	size_t len = d->items[di].len;
	if (any_share(ag)) {
		/* the child has its own copy of the frame's bytes */
		struct put_ctx x = {path, data, len, (mode_t)(mode & 07777), mkdirs, true, ++ag->tmp_counter};
		fjob_start(ag, id, put_child, &x, sm_take_ptr(path), FJ_WRITE, sizeof(int), 0, NULL);
		return;
	}
	int r = put_file(path, data, len, (mode_t)(mode & 07777), mkdirs, true, ++ag->tmp_counter);
	if (r < 0)
		res_errno(ag, id, -r, path);
	else
		res_empty(ag, id);
}

/* read-file: load_file reads the file (<= limit bytes), reply_loaded answers. While a share is
 * attached the load runs in a file job's child (see fjob_start), which sends
 * {int32 rc, uint32 mode, uint32 len} + the bytes. */
enum { LF_NOTREG = 1, LF_TOOBIG = 2, LF_GREW = 3 };

static size_t read_limit(struct agent *ag)
{
	size_t limit = SM_MAX_FILE_BYTES;
	if (ag->host_max_frame - 256 < limit)
		limit = ag->host_max_frame - 256;
	return limit;
}

/* 0 with *buf (malloc'd) / *got / *mode, -errno, or one of LF_*. */
static int load_file(const char *path, size_t limit, uint8_t **buf, size_t *got, mode_t *mode)
{
	*buf = NULL;
	*got = 0;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	*mode = st.st_mode & 07777;
	int rc = 0;
	if (!S_ISREG(st.st_mode))
		rc = LF_NOTREG;
	else if ((uint64_t)st.st_size > limit)
		rc = LF_TOOBIG;
	/* files may grow between fstat and read: read at most limit + 1 */
	size_t bcap = (size_t)st.st_size + 1 > limit + 1 ? limit + 1 : (size_t)st.st_size + 1;
	_cleanup_free_ uint8_t *b = rc ? NULL : malloc(bcap);
	if (!rc && !b)
		rc = -ENOMEM;
	size_t n_got = 0;
	while (rc == 0) {
		if (n_got == bcap) {
			if (bcap > limit)
				break;
			size_t nc = bcap * 2 > limit + 1 ? limit + 1 : bcap * 2;
			uint8_t *nb = realloc(b, nc);
			if (!nb) {
				rc = -ENOMEM;
				break;
			}
			b = nb;
			bcap = nc;
		}
		ssize_t n = read(fd, b + n_got, bcap - n_got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			rc = -errno;
		if (n <= 0)
			break;
		n_got += (size_t)n;
	}
	if (rc == 0 && n_got > limit)
		rc = LF_GREW;
	if (rc != 0)
		return rc;
	*buf = sm_take_ptr(b);
	*got = n_got;
	return 0;
}

static void reply_loaded(struct agent *ag, uint32_t id, const char *path, int rc, const uint8_t *buf, size_t got,
			 mode_t mode, size_t limit)
{
	char msg[512];
	if (rc < 0) {
		res_errno(ag, id, -rc, path);
	} else if (rc == LF_NOTREG) {
		snprintf(msg, sizeof(msg), "%.300s: not a regular file", path);
		res_error(ag, id, "EINVAL", msg);
	} else if (rc == LF_TOOBIG) {
		snprintf(msg, sizeof(msg), "%.300s: larger than %zu bytes", path, limit);
		res_error(ag, id, "SM_FILE_TOO_LARGE", msg);
	} else if (rc == LF_GREW) {
		res_error(ag, id, "SM_FILE_TOO_LARGE", "file grew beyond the limit while reading");
	} else {
		res_begin(ag, id, 2);
		cbe_text(&ag->outq, "data");
		cbe_bytes(&ag->outq, buf, got);
		kv_uint(ag, "mode", mode);
		if (!fend(ag))
			res_error(ag, id, "SM_FILE_TOO_LARGE", "result does not fit in a frame");
	}
}

struct read_ctx {
	const char *path;
	size_t limit;
};

static void read_child(void *c, int wr)
{
	struct read_ctx *x = c;
	uint8_t *buf;
	size_t got;
	mode_t mode = 0;
	int32_t hdr[3];
	hdr[0] = load_file(x->path, x->limit, &buf, &got, &mode);
	hdr[1] = (int32_t)mode;
	hdr[2] = hdr[0] == 0 ? (int32_t)got : 0;
	pipe_put(wr, hdr, sizeof(hdr));
	if (hdr[0] == 0)
		pipe_put(wr, buf, got);
}

/* While a share is attached, write-file and read-file run in a forked child that answers through a
 * pipe, and the event loop goes on meanwhile: the child's path may lead into a share (directly or
 * through a guest-made symlink), whose FUSE requests this loop relays. The request is answered
 * when the child has answered, or with EIO after SM_FILE_JOB_TIMEOUT_MS (the child is killed). */

static void fjob_answer(struct agent *ag, struct file_job *j, ssize_t n)
{
	char msg[512];
	if (n == -ETIMEDOUT) {
		snprintf(msg, sizeof(msg), "%.300s: no answer within %d s (a live host share that does not answer?)",
			 j->path, SM_FILE_JOB_TIMEOUT_MS / 1000);
		res_error(ag, j->req_id, "EIO", msg);
		return;
	}
	if (j->kind == FJ_STAGE) {
		struct stage_out out;
		if (n != (ssize_t)sizeof(out)) {
			res_errno(ag, j->req_id, n < 0 ? (int)-n : EIO, "stage");
			return;
		}
		memcpy(&out, j->buf, sizeof(out));
		out.msg[sizeof(out.msg) - 1] = 0;
		if (out.r < 0) {
			res_error(ag, j->req_id, errno_code(-out.r), out.msg);
			return;
		}
		struct exec_cont *k = j->cont;
		j->cont = NULL;
		exec_launch(ag, j->req_id, &k->a, k->spawn, k->p, k->s);
		free(k);
		return;
	}
	if (j->kind == FJ_WRITE) {
		int r;
		if (n != (ssize_t)sizeof(r)) {
			res_errno(ag, j->req_id, n < 0 ? (int)-n : EIO, j->path);
			return;
		}
		memcpy(&r, j->buf, sizeof(r));
		if (r < 0)
			res_errno(ag, j->req_id, -r, j->path);
		else
			res_empty(ag, j->req_id);
		return;
	}
	int32_t hdr[3];
	if (n < (ssize_t)sizeof(hdr)) {
		res_errno(ag, j->req_id, n < 0 ? (int)-n : EIO, j->path);
		return;
	}
	memcpy(hdr, j->buf, sizeof(hdr));
	if (hdr[0] == 0 && (size_t)n - sizeof(hdr) != (size_t)hdr[2])
		res_errno(ag, j->req_id, EIO, j->path); /* the child died mid-answer */
	else
		reply_loaded(ag, j->req_id, j->path, hdr[0], j->buf + sizeof(hdr), (size_t)hdr[2], (mode_t)hdr[1],
			     j->limit);
}

/* n: bytes the child wrote, or -errno / -ETIMEDOUT / -EFBIG. Answers unless the session changed. */
static void fjob_finish(struct agent *ag, struct file_job *j, ssize_t n)
{
	watch_close(ag, &j->w);
	if (n < 0)
		kill(j->pid, SIGKILL); /* reap() collects it */
	if (ag->session && j->sess == ag->sess && pending_has(ag, j->req_id)) {
		pending_del(ag, j->req_id);
		fjob_answer(ag, j, n);
	}
	exec_cont_free(j->cont); /* not launched: failed, or the session changed */
	free(j->buf);
	free(j->path);
	memset(j, 0, sizeof(*j));
	j->w.fd = -1;
}

void fjob_readable(struct agent *ag, struct file_job *j)
{
	for (;;) {
		uint8_t extra;
		/* at cap, one more byte tells EOF (the answer was exactly cap bytes) from an overflow */
		ssize_t n = j->got == j->cap ? read(j->w.fd, &extra, 1) : read(j->w.fd, j->buf + j->got, j->cap - j->got);
		if (n > 0 && j->got == j->cap) {
			fjob_finish(ag, j, -EFBIG);
			return;
		}
		if (n > 0) {
			j->got += (size_t)n;
			continue;
		}
		if (n == 0) {
			fjob_finish(ag, j, (ssize_t)j->got);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			fjob_finish(ag, j, -errno);
		return;
	}
}

void fjob_timers(struct agent *ag, int64_t now)
{
	for (int i = 0; i < SM_MAX_FILE_JOBS; i++)
		if (ag->fjobs[i].used && now >= ag->fjobs[i].deadline)
			fjob_finish(ag, &ag->fjobs[i], -ETIMEDOUT);
}

int64_t fjob_next_deadline(struct agent *ag, int64_t t, int64_t now)
{
	for (int i = 0; i < SM_MAX_FILE_JOBS; i++)
		if (ag->fjobs[i].used && ag->fjobs[i].deadline - now < t)
			t = ag->fjobs[i].deadline - now;
	return t;
}

/* Start fn(ctx, pipe) in a child for request id; the answer comes later (fjob_answer). Takes path. */
static void fjob_start(struct agent *ag, uint32_t id, guard_fn fn, void *ctx, char *path, enum fjob_kind kind,
		       size_t cap, size_t limit, struct exec_cont *cont)
{
	_cleanup_free_ char *owned_path = path;
	struct file_job *j = NULL;
	for (int i = 0; i < SM_MAX_FILE_JOBS && !j; i++)
		if (!ag->fjobs[i].used)
			j = &ag->fjobs[i];
	int pfd[2] = {-1, -1};
	_cleanup_free_ uint8_t *buf = j ? malloc(cap) : NULL;
	if (!j || !buf || pipe2(pfd, O_CLOEXEC) < 0) {
		int e = !j ? EBUSY : !buf ? ENOMEM : errno;
		res_errno(ag, id, e, !j ? "too many file operations in progress" : path);
		exec_cont_free(cont);
		return;
	}
	_cleanup_close_ int rd = pfd[0], wr = pfd[1];
	pid_t pid = fork();
	if (pid < 0) {
		res_errno(ag, id, errno, "fork");
		exec_cont_free(cont);
		return;
	}
	if (pid == 0) {
		close(sm_take_fd(&rd));
		fn(ctx, wr);
		_exit(0);
	}
	close(sm_take_fd(&wr));
	set_nonblock(rd);
	*j = (struct file_job){.used = true, .kind = kind, .cont = cont, .pid = pid, .req_id = id, .sess = ag->sess,
			       .deadline = mono_ms() + SM_FILE_JOB_TIMEOUT_MS, .buf = sm_take_ptr(buf), .cap = cap,
			       .limit = limit, .path = sm_take_ptr(owned_path)};
	j->w.kind = W_FJOB;
	j->w.fd = sm_take_fd(&rd);
	j->w.obj = j;
	ag->pending[ag->npending++] = id;
	watch_set(ag, &j->w, EPOLLIN);
}

void op_read_file(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	int pi;
	struct sm_err e;
	if (args_path(d, args, "path", &pi, &e) < 0) {
		res_err(ag, id, &e);
		return;
	}
	_cleanup_free_ char *path = req_path(ag, id, d, pi);
	if (!path)
		return;
	size_t limit = read_limit(ag);
	if (any_share(ag)) {
		struct read_ctx x = {path, limit};
		fjob_start(ag, id, read_child, &x, sm_take_ptr(path), FJ_READ, 12 + limit, limit, NULL);
		return;
	}
	_cleanup_free_ uint8_t *buf = NULL;
	size_t got;
	mode_t mode = 0;
	int rc = load_file(path, limit, &buf, &got, &mode);
	reply_loaded(ag, id, path, rc, buf, got, mode, limit);
}
