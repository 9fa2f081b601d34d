/* Live host shares (SPEC 6.4): the agent relays raw FUSE messages between the guest
 * kernel's /dev/fuse and an agent-protocol channel; the FUSE server runs on the host.
 * This header holds the pure relay logic (request parsing, outstanding-unique set,
 * reply assembly and filtering: unit-tested on the host) and the mount helpers. */
#ifndef SM_FUSE_H
#define SM_FUSE_H

#include "sm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FS_TAG_MAX 35                 /* SPEC 6.4 FS_TAG_MAX, bytes */
#define FS_MAX_SHARES 16              /* SPEC 10 FS_MAX_SHARES */
#define FS_REQ_BUF 135168u            /* SPEC 10: /dev/fuse read buffer, bytes */
#define FS_REPLY_MAX 135168u          /* SPEC 10: longest reply/notification, bytes */
#define FS_MAX_OUTSTANDING 256        /* SPEC 10: requests awaiting a reply per share */
#define FS_MAX_WRITE 131072u          /* SPEC 10: largest max_write in the INIT reply */
#define FS_IN_HDR 40u                 /* sizeof(struct fuse_in_header) */
#define FS_OUT_HDR 16u                /* sizeof(struct fuse_out_header) */
#define FS_STAGING "/run/supermachine/shares"
#define FS_HELPER "/sbin/mount.smfs"
/* mount -t virtiofs <tag> <dir> (the original's command): a symlink to mount.smfs */
#define FS_HELPER_VIRTIOFS "/sbin/mount.virtiofs"
#define FS_HELPER_TIMEOUT_MS 5000     /* mkdir/mount/umount child of fs-attach/fs-detach */

/* <linux/fuse.h> opcodes the relay needs (musl ships no kernel headers) */
#define FUSE_OP_FORGET 2
#define FUSE_OP_INIT 26
#define FUSE_OP_INTERRUPT 36
#define FUSE_OP_NOTIFY_REPLY 41
#define FUSE_OP_BATCH_FORGET 42
/* offset of max_write in a FUSE_INIT reply (fuse_out_header + fuse_init_out.max_write) */
#define FS_INIT_MAX_WRITE_OFF (FS_OUT_HDR + 20u)

struct fs_relay {
	uint64_t uniq[FS_MAX_OUTSTANDING]; /* uniques of forwarded requests awaiting a reply */
	uint32_t nuniq;
	bool init_pending;
	uint64_t init_unique;
	uint8_t *rbuf; /* FS_REPLY_MAX bytes: the host message being assembled */
	uint32_t rhave;
	/* counters (diagnostics, tests) */
	uint64_t dropped; /* replies for uniques that were not outstanding */
};

/* Share tag rule: 1..35 bytes of [A-Za-z0-9._-], not "." or "..". */
bool fs_tag_valid(const char *p, size_t n);

/* A request as read(2) from /dev/fuse: 0 with opcode/unique, -1 if n is not one whole request. */
int fs_req_parse(const uint8_t *p, size_t n, uint32_t *opcode, uint64_t *unique);
/* Whether the kernel waits for a reply to this opcode. */
bool fs_req_needs_reply(uint32_t opcode);

/* Reset state; rbuf is kept (allocated by the caller, FS_REPLY_MAX bytes). */
void fs_relay_init(struct fs_relay *r, uint8_t *rbuf);
bool fs_relay_full(const struct fs_relay *r);
/* Record a forwarded request. 0, or -1 when FS_MAX_OUTSTANDING are already outstanding. */
int fs_relay_track(struct fs_relay *r, uint32_t opcode, uint64_t unique);
bool fs_relay_untrack(struct fs_relay *r, uint64_t unique);

/* Feeds host bytes; calls emit for each complete message that must be written to
 * /dev/fuse (replies to outstanding requests, INIT max_write clamped; notifications).
 * Returns 0, or -1 when a message length is outside 16..FS_REPLY_MAX (host misbehaves). */
typedef void (*fs_emit_fn)(void *ctx, const uint8_t *msg, uint32_t len);
int fs_relay_feed(struct fs_relay *r, const uint8_t *p, size_t n, fs_emit_fn emit, void *ctx);

/* A fuse_out_header with error -err (err > 0) and no body. */
void fs_err_reply(uint8_t out[FS_OUT_HDR], uint64_t unique, int err);

/* One line of /proc/self/mountinfo: points mountpoint/fstype/source into the (modified)
 * line, mountpoint unescaped (\ooo). 0, or -1 for a malformed line. */
int fs_mountinfo_parse(char *line, char **mountpoint, char **fstype, char **source);

/* Calls fn for each well-formed line of /proc/self/mountinfo until fn returns non-zero; returns
 * that value, 0 when fn never did, or -1 when the file cannot be read. */
typedef int (*fs_mount_fn)(const char *mountpoint, const char *fstype, const char *source, void *ctx);
int fs_mountinfo_each(fs_mount_fn fn, void *ctx);

/* For a mountinfo walker: 0 when mp (of fstype type) is no FUSE mount or path is not lexically at or
 * below it, 1 when it is, 2 when the FUSE mount is on "/" (it covers every path). */
int fs_fuse_covers(const char *mp, const char *type, const char *path);

/* Unmounts (MNT_DETACH, last mounted first) every fuse.smfs mount whose source is tag.
 * Returns the number unmounted. Touches only mountinfo and umount2. */
int fs_umount_tag(const char *tag);

/* Whether argv[0]'s basename names the mount helper: "mount.virtiofs" or "mount.smfs". */
bool fs_is_helper_name(const char *base);

/* The helper's command line as mount(8) passes it: busybox `mount.<type> <src> <dir> [-o opts]`,
 * util-linux `mount.<type> <src> <dir> [-sfnv] [-N ns] [-o opts] [-t type]`. Options in -o:
 * "ro" (read-only bind), "rw"; others are ignored. -f (fake) sets *fake. 0, or -1 with a
 * message in err (usage, -N: another mount namespace is not supported). */
struct fs_helper_args {
	const char *tag, *dir;
	bool ro, fake;
};
int fs_helper_parse(int argc, char **argv, struct fs_helper_args *a, struct sm_err *err);

/* Mount helper mode (mount -t virtiofs|smfs <tag> <dir>): binds the share's staging dir
 * onto dir. Exit 0; 32 (mount failure) with "No such device" when no share has that tag. */
int fs_mount_helper_main(int argc, char **argv);

#endif
