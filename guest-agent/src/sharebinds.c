/* Users' binds of a live host share survive fs-detach / fs-attach. See sharebinds.h. */
#include "sharebinds.h"

#include "fuse.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_openat2
#define SYS_openat2 437 /* same number on x86_64 and aarch64 */
#endif
/* <linux/openat2.h> (musl ships no kernel headers) */
struct sm_open_how {
	uint64_t flags, mode, resolve;
};
#define SM_RESOLVE_NO_MAGICLINKS 0x02
#define SM_RESOLVE_NO_SYMLINKS 0x04

static struct fs_binds saved[FS_MAX_SHARES];

int fs_binds_match(char *line, const char *tag, const char *staging, char **mountpoint, bool *ro)
{
	/* field 6 (per-mount options) before fs_mountinfo_parse cuts the line up */
	char opts[8] = "";
	const char *p = line;
	for (int f = 0; f < 5 && p; f++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (!p)
		return -1;
	size_t n = strcspn(p, " \n");
	snprintf(opts, sizeof(opts), "%.*s", (int)(n < sizeof(opts) - 1 ? n : sizeof(opts) - 1), p);
	char *mp, *type, *src;
	if (fs_mountinfo_parse(line, &mp, &type, &src) < 0)
		return -1;
	if (strcmp(type, "fuse.smfs") != 0 || strcmp(src, tag) != 0 || !strcmp(mp, staging))
		return 0;
	*mountpoint = mp;
	*ro = !strncmp(opts, "ro", 2) && (opts[2] == ',' || opts[2] == 0);
	return 1;
}

static struct fs_binds *slot(const char *tag, bool create)
{
	struct fs_binds *free_slot = NULL;
	for (int i = 0; i < FS_MAX_SHARES; i++) {
		if (saved[i].tag[0] && !strcmp(saved[i].tag, tag))
			return &saved[i];
		if (!saved[i].tag[0] && !free_slot)
			free_slot = &saved[i];
	}
	if (create && free_slot)
		snprintf(free_slot->tag, sizeof(free_slot->tag), "%s", tag);
	return create ? free_slot : NULL;
}

void fs_binds_forget(const char *tag)
{
	struct fs_binds *s = slot(tag, false);
	if (!s)
		return;
	for (int i = 0; i < s->n; i++)
		free(s->b[i].path);
	memset(s, 0, sizeof(*s));
}

struct fs_binds *fs_binds_find(const char *tag)
{
	return slot(tag, false);
}

int fs_binds_save(const char *tag, const char *staging, const char *attach_path)
{
	fs_binds_forget(tag);
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return 0;
	struct fs_binds *s = NULL;
	char line[8192];
	while (fgets(line, sizeof(line), f)) {
		char *mp;
		bool ro;
		if (fs_binds_match(line, tag, staging, &mp, &ro) != 1 || (attach_path && !strcmp(mp, attach_path)))
			continue;
		if (!s && !(s = slot(tag, true)))
			break;
		if (s->n == FS_BINDS_MAX)
			break;
		char *copy = strdup(mp);
		if (!copy)
			break;
		s->b[s->n].path = copy;
		s->b[s->n].ro = ro;
		s->n++;
	}
	fclose(f);
	return s ? s->n : 0;
}

void fs_binds_prune(struct fs_binds *s, bool (*skip)(const char *path, void *ctx), void *ctx)
{
	int k = 0;
	for (int i = 0; i < s->n; i++) {
		if (skip(s->b[i].path, ctx))
			free(s->b[i].path);
		else
			s->b[k++] = s->b[i];
	}
	s->n = k;
}

static int open_nofollow(const char *path)
{
	struct sm_open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
				  .resolve = SM_RESOLVE_NO_SYMLINKS | SM_RESOLVE_NO_MAGICLINKS};
	return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
}

/* mountinfo walker: whether ctx (a canonical path) is at or below a FUSE mount point */
static int at_or_below_fuse(const char *mp, const char *type, const char *src, void *ctx)
{
	(void)src;
	return fs_fuse_covers(mp, type, ctx) != 0; /* a FUSE mount on / covers everything */
}

int fs_binds_restore(const char *staging, const struct fs_binds *s)
{
	int made = 0;
	for (int i = 0; s && i < s->n; i++) {
		const char *path = s->b[i].path;
		if (path[0] != '/')
			continue;
		/* checked again here, after the staging mount and the binds made so far: a remembered
		 * /a/b inside a bind at /a would need a LOOKUP that only PID 1 (waiting for us) relays */
		if (fs_mountinfo_each(at_or_below_fuse, (void *)path) != 0)
			continue;
		int fd = open_nofollow(path);
		if (fd < 0)
			continue;
		char target[64];
		snprintf(target, sizeof(target), "/proc/self/fd/%d", fd);
		int r = mount(staging, target, NULL, MS_BIND, NULL);
		close(fd);
		if (r < 0)
			continue;
		made++;
		if (!s->b[i].ro)
			continue;
		/* the new bind is on top now: open it (not what is below) to make it read-only */
		if ((fd = open_nofollow(path)) < 0)
			continue;
		snprintf(target, sizeof(target), "/proc/self/fd/%d", fd);
		if (mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0) {
			umount2(target, MNT_DETACH);
			made--;
		}
		close(fd);
	}
	return made;
}
