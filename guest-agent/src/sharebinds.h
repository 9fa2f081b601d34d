/* Users' binds of a live host share survive fs-detach / fs-attach (SPEC 6.4).
 *
 * Hosts detach every share before a snapshot and attach it again after a restore. fs-detach
 * unmounts every fuse.smfs mount of the tag, including what users mounted with
 * `mount -t virtiofs <tag> <dir>` (e.g. in the warmup). PID 1 remembers those binds (mount point
 * and ro flag, from /proc/self/mountinfo) when it detaches, and the next fs-attach of the same
 * tag makes them again, so a warmup's mount is there in every VM restored from the snapshot.
 * The list lives in PID 1's memory, which is part of the snapshot. */
#ifndef SM_SHAREBINDS_H
#define SM_SHAREBINDS_H

#include <stdbool.h>
#include <stddef.h>

#define FS_BINDS_MAX 32 /* remembered binds per tag; more are not remembered */

struct fs_bind {
	char *path;
	bool ro;
};

struct fs_binds {
	char tag[36];
	struct fs_bind b[FS_BINDS_MAX];
	int n;
};

/* One /proc/self/mountinfo line: whether it is a user's bind of tag (fstype fuse.smfs, source
 * tag, mount point not the staging dir), with its mount point (unescaped) and ro flag.
 * The line is modified. 1 yes, 0 no, -1 malformed. */
int fs_binds_match(char *line, const char *tag, const char *staging, char **mountpoint, bool *ro);

/* PID 1, at fs-detach (before unmounting): remembers tag's user binds (not staging, not the
 * attach's own path, which may be NULL), replacing what was remembered for it before. Reads only
 * /proc/self/mountinfo. Returns how many. */
int fs_binds_save(const char *tag, const char *staging, const char *attach_path);

/* The binds remembered for tag, or NULL. */
struct fs_binds *fs_binds_find(const char *tag);

/* Drops entries for which skip(path) is true (e.g. a path on another share: binding there
 * would wait on FUSE requests only PID 1 relays). */
void fs_binds_prune(struct fs_binds *s, bool (*skip)(const char *path, void *ctx), void *ctx);

/* Forgets tag's list (after it was used by fs-attach). */
void fs_binds_forget(const char *tag);

/* Child process of fs-attach: binds staging onto every remembered mount point again (read-only
 * where it was). Mount points are resolved without following symlinks (openat2
 * RESOLVE_NO_SYMLINKS): a path the guest replaced by a symlink is skipped, never followed.
 * Returns how many were made. */
int fs_binds_restore(const char *staging, const struct fs_binds *s);

#endif
