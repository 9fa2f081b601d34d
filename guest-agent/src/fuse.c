/* Live host shares (SPEC 6.4): pure FUSE relay logic and the mount helpers.
 * Every length that comes from the host is checked before it is used. */
#include "fuse.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

bool fs_tag_valid(const char *p, size_t n)
{
	if (n < 1 || n > FS_TAG_MAX)
		return false;
	if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

int fs_req_parse(const uint8_t *p, size_t n, uint32_t *opcode, uint64_t *unique)
{
	if (n < FS_IN_HDR || n > FS_REQ_BUF || le32(p) != n)
		return -1;
	*opcode = le32(p + 4);
	*unique = le64(p + 8);
	return 0;
}

bool fs_req_needs_reply(uint32_t opcode)
{
	return opcode != FUSE_OP_FORGET && opcode != FUSE_OP_BATCH_FORGET && opcode != FUSE_OP_INTERRUPT &&
	       opcode != FUSE_OP_NOTIFY_REPLY;
}

void fs_relay_init(struct fs_relay *r, uint8_t *rbuf)
{
	memset(r, 0, sizeof(*r));
	r->rbuf = rbuf;
}

bool fs_relay_full(const struct fs_relay *r) { return r->nuniq >= FS_MAX_OUTSTANDING; }

int fs_relay_track(struct fs_relay *r, uint32_t opcode, uint64_t unique)
{
	if (!fs_req_needs_reply(opcode) || unique == 0)
		return 0;
	if (fs_relay_full(r))
		return -1;
	r->uniq[r->nuniq++] = unique;
	if (opcode == FUSE_OP_INIT) {
		r->init_pending = true;
		r->init_unique = unique;
	}
	return 0;
}

bool fs_relay_untrack(struct fs_relay *r, uint64_t unique)
{
	for (uint32_t i = 0; i < r->nuniq; i++)
		if (r->uniq[i] == unique) {
			r->uniq[i] = r->uniq[--r->nuniq];
			return true;
		}
	return false;
}

/* A complete message from the host: decide whether it reaches /dev/fuse. */
static void relay_message(struct fs_relay *r, uint8_t *m, uint32_t len, fs_emit_fn emit, void *ctx)
{
	uint64_t unique = le64(m + 8);
	if (unique != 0) {
		if (!fs_relay_untrack(r, unique)) {
			r->dropped++;
			return;
		}
		int32_t error = (int32_t)le32(m + 4);
		if (r->init_pending && unique == r->init_unique) {
			r->init_pending = false;
			if (error == 0 && len >= FS_INIT_MAX_WRITE_OFF + 4 &&
			    le32(m + FS_INIT_MAX_WRITE_OFF) > FS_MAX_WRITE)
				put_le32(m + FS_INIT_MAX_WRITE_OFF, FS_MAX_WRITE);
		}
	}
	emit(ctx, m, len);
}

int fs_relay_feed(struct fs_relay *r, const uint8_t *p, size_t n, fs_emit_fn emit, void *ctx)
{
	while (n > 0) {
		/* header first, then the body up to len */
		uint32_t want = FS_OUT_HDR;
		if (r->rhave >= 4) {
			uint32_t len = le32(r->rbuf);
			if (len < FS_OUT_HDR || len > FS_REPLY_MAX)
				return -1;
			want = len;
		}
		if (r->rhave < want) {
			size_t k = want - r->rhave;
			if (k > n)
				k = n;
			memcpy(r->rbuf + r->rhave, p, k);
			r->rhave += (uint32_t)k;
			p += k;
			n -= k;
		}
		if (r->rhave >= 4) {
			uint32_t len = le32(r->rbuf);
			if (len < FS_OUT_HDR || len > FS_REPLY_MAX)
				return -1;
			if (r->rhave == len) {
				relay_message(r, r->rbuf, len, emit, ctx);
				r->rhave = 0;
			}
		}
	}
	return 0;
}

void fs_err_reply(uint8_t out[FS_OUT_HDR], uint64_t unique, int err)
{
	put_le32(out, FS_OUT_HDR);
	put_le32(out + 4, (uint32_t)-err);
	put_le32(out + 8, (uint32_t)unique);
	put_le32(out + 12, (uint32_t)(unique >> 32));
}

/* ------------------------------------------------------------------ mountinfo */

static void unescape_octal(char *s)
{
	char *w = s;
	for (char *r = s; *r;) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
		    r[3] <= '7') {
			*w++ = (char)((r[1] - '0') << 6 | (r[2] - '0') << 3 | (r[3] - '0'));
			r += 4;
		} else {
			*w++ = *r++;
		}
	}
	*w = 0;
}

/* "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue" */
int fs_mountinfo_parse(char *line, char **mountpoint, char **fstype, char **source)
{
	char *save = NULL;
	char *f[5];
	line[strcspn(line, "\n")] = 0;
	char *t = strtok_r(line, " ", &save);
	for (int i = 0; i < 5; i++) {
		if (!t)
			return -1;
		f[i] = t;
		t = strtok_r(NULL, " ", &save);
	}
	while (t && strcmp(t, "-") != 0)
		t = strtok_r(NULL, " ", &save); /* optional fields */
	if (!t)
		return -1;
	char *type = strtok_r(NULL, " ", &save);
	char *src = strtok_r(NULL, " ", &save);
	if (!type || !src)
		return -1;
	unescape_octal(f[4]);
	unescape_octal(src);
	*mountpoint = f[4];
	*fstype = type;
	*source = src;
	return 0;
}

int fs_mountinfo_each(fs_mount_fn fn, void *ctx)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -1;
	char line[8192];
	int r = 0;
	while (!r && fgets(line, sizeof(line), f)) {
		char *mp, *type, *src;
		if (fs_mountinfo_parse(line, &mp, &type, &src) == 0)
			r = fn(mp, type, src, ctx);
	}
	fclose(f);
	return r;
}

struct tag_mounts {
	const char *tag;
	char **paths;
	size_t n, cap;
};

static int collect_tag_mount(const char *mp, const char *type, const char *src, void *ctx)
{
	struct tag_mounts *t = ctx;
	if (strcmp(type, "fuse.smfs") != 0 || strcmp(src, t->tag) != 0)
		return 0;
	if (t->n == t->cap) {
		size_t nc = t->cap ? t->cap * 2 : 8;
		char **np = realloc(t->paths, nc * sizeof(*np));
		if (!np)
			return 1; /* unmount what was collected */
		t->paths = np;
		t->cap = nc;
	}
	t->paths[t->n] = strdup(mp);
	if (t->paths[t->n])
		t->n++;
	return 0;
}

int fs_umount_tag(const char *tag)
{
	struct tag_mounts t = {.tag = tag};
	if (fs_mountinfo_each(collect_tag_mount, &t) < 0)
		return 0;
	char **paths = t.paths;
	size_t n = t.n;
	int done = 0;
	for (size_t i = n; i-- > 0;) {
		if (umount2(paths[i], MNT_DETACH) == 0)
			done++;
		free(paths[i]);
	}
	free(paths);
	return done;
}

static int is_staging_mount(const char *mp, const char *type, const char *src, void *ctx)
{
	(void)src;
	return !strcmp(mp, ctx) && !strcmp(type, "fuse.smfs");
}

static bool share_mounted(const char *staging)
{
	return fs_mountinfo_each(is_staging_mount, (void *)staging) == 1;
}

/* ------------------------------------------------------------------ mount helper */

bool fs_is_helper_name(const char *base)
{
	return !strcmp(base, "mount.virtiofs") || !strcmp(base, "mount.smfs");
}

/* one -o list: "ro"/"rw" matter, the rest (defaults, noatime, _netdev, ...) is ignored */
static void helper_opts(const char *list, struct fs_helper_args *a)
{
	const char *p = list;
	while (*p) {
		size_t n = strcspn(p, ",");
		if (n == 2 && !strncmp(p, "ro", 2))
			a->ro = true;
		else if (n == 2 && !strncmp(p, "rw", 2))
			a->ro = false;
		p += n;
		if (*p == ',')
			p++;
	}
}

int fs_helper_parse(int argc, char **argv, struct fs_helper_args *a, struct sm_err *err)
{
	memset(a, 0, sizeof(*a));
	int npos = 0;
	for (int i = 1; i < argc; i++) {
		const char *s = argv[i];
		if (s[0] != '-' || !s[1]) {
			if (npos == 0)
				a->tag = s;
			else if (npos == 1)
				a->dir = s;
			else {
				sm_err_fmt(err, "EINVAL", "unexpected argument '%.64s'", s);
				return -EINVAL;
			}
			npos++;
			continue;
		}
		if (s[1] == 'o' || s[1] == 't' || s[1] == 'N') {
			const char *v = s[2] ? s + 2 : (i + 1 < argc ? argv[++i] : NULL);
			if (!v) {
				sm_err_fmt(err, "EINVAL", "option -%c needs a value", s[1]);
				return -EINVAL;
			}
			if (s[1] == 'o')
				helper_opts(v, a);
			else if (s[1] == 'N') {
				sm_err_fmt(err, "EINVAL", "-N (another mount namespace) is not supported");
				return -EINVAL;
			}
			continue;
		}
		/* flags: -s sloppy, -n no mtab, -v verbose (ignored), -f fake */
		for (const char *f = s + 1; *f; f++)
			if (*f == 'f')
				a->fake = true;
	}
	if (npos != 2) {
		sm_err_fmt(err, "EINVAL", "usage: mount -t virtiofs <tag> <dir> [-o ro]");
		return -EINVAL;
	}
	return 0;
}

int fs_mount_helper_main(int argc, char **argv)
{
	const char *me = argc > 0 && argv[0] ? strrchr(argv[0], '/') : NULL;
	me = me ? me + 1 : (argc > 0 && argv[0] ? argv[0] : "mount.virtiofs");
	struct fs_helper_args a;
	struct sm_err err;
	if (fs_helper_parse(argc, argv, &a, &err) < 0) {
		fprintf(stderr, "%s: %s\n", me, err.msg);
		return 1;
	}
	char staging[128];
	bool valid = fs_tag_valid(a.tag, strlen(a.tag));
	if (valid)
		snprintf(staging, sizeof(staging), "%s/%s", FS_STAGING, a.tag);
	if (!valid || !share_mounted(staging)) {
		/* what mount(2) says for a virtiofs tag that no device has: ENODEV */
		fprintf(stderr, "%s: mounting %.64s on %.256s failed: %s (no live host share '%.64s' is attached)\n", me,
			a.tag, a.dir, strerror(ENODEV), a.tag);
		return 32;
	}
	if (a.fake)
		return 0;
	if (mount(staging, a.dir, NULL, MS_BIND, NULL) < 0) {
		fprintf(stderr, "%s: mounting %s on %s failed: %s\n", me, a.tag, a.dir, strerror(errno));
		return 32;
	}
	if (a.ro && mount(NULL, a.dir, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0) {
		int e = errno;
		umount2(a.dir, MNT_DETACH);
		fprintf(stderr, "%s: mounting %s on %s read-only failed: %s\n", me, a.tag, a.dir, strerror(e));
		return 32;
	}
	return 0;
}

int fs_fuse_covers(const char *mp, const char *type, const char *path)
{
	if (strncmp(type, "fuse", 4) != 0)
		return 0;
	size_t n = strlen(mp);
	while (n > 1 && mp[n - 1] == '/')
		n--;
	if (n == 1)
		return 2;
	return !strncmp(path, mp, n) && (path[n] == 0 || path[n] == '/');
}
