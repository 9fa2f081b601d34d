/* Shared declarations of the supermachine guest agent. Limits carry their unit
 * in the name; protocol values point at packages/agent-protocol/SPEC.md. */
#ifndef SM_H
#define SM_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include "cbor.h"

#ifndef SM_AGENT_VERSION
#define SM_AGENT_VERSION "0.1.0"
#endif

#define SM_PROTO_VERSION 1
#define SM_MAX_FRAME_BYTES (5u * 1024 * 1024)     /* SPEC: Framing, maxFrame */
#define SM_MIN_FRAME_BYTES (1024u * 1024)         /* SPEC 4.3 MIN_MAX_FRAME */
#define SM_WINDOW_BYTES (256u * 1024)             /* SPEC 4.3 DEFAULT_WINDOW: what we announce */
#define SM_MIN_WINDOW_BYTES 65536u                /* SPEC 4.3 MIN_WINDOW */
#define SM_MAX_WINDOW_BYTES (16u * 1024 * 1024)   /* SPEC 4.3 MAX_WINDOW */
#define SM_DATA_OVERHEAD_BYTES 64u                /* SPEC 8.4 DATA_OVERHEAD */
#define SM_EXEC_RESULT_MAX_BYTES (1024u * 1024)   /* SPEC 6.1 EXEC_RESULT_MAX */
#define SM_MAX_PENDING 1024                       /* SPEC 5 MAX_PENDING_REQUESTS */
#define SM_ARGV_MAX 4096                          /* SPEC 10 */
#define SM_ARG_BYTES_MAX 131072u                  /* SPEC 6: argv entry length */
#define SM_ENV_MAX 4096
#define SM_STAGE_MAX 1024
#define SM_PATH_MAX_BYTES 4096u
#define SM_ENTROPY_MIN 32u
#define SM_ENTROPY_MAX 512u
#define SM_TCP_CONNECT_TIMEOUT_MS 10000
#define SM_CONFIG_MAX_BYTES (1024u * 1024)        /* SPEC 12 */
#define SM_MAX_FILE_BYTES (4u * 1024 * 1024)      /* SPEC: write-file/read-file cap */
#define SM_COLLECT_BUF_BYTES (64u * 1024)         /* SPEC 6.1 EXEC_TAIL_MAX */
#define SM_DATA_CHUNK_BYTES (64u * 1024)          /* largest data payload we send (<= DATA_CHUNK_MAX) */
#define SM_OUTQ_SOFT_BYTES (1u * 1024 * 1024)     /* stop reading fds above this */
#define SM_OUTQ_HARD_BYTES (24u * 1024 * 1024)    /* stop reading the host above this */
#define SM_MAX_ITEMS 131072u                      /* CBOR items per frame (valid frames need < 25k) */
#define SM_MAX_CHANNELS 1024
#define SM_MAX_PROCS 256
#define SM_MAX_GROUPS 64
#define SM_MAX_VOLUMES 16
#define SM_RECONNECT_POLL_MS 50
/* A tcp channel whose writer streams in small pieces (3 reads in a row of less than the read
 * buffer, each within SM_TCP_BATCH_GAP_MS of the last) is read at most every SM_TCP_BATCH_MS:
 * the bytes queue in the socket instead of costing the agent a wakeup, a read and a frame
 * each (busybox nc writes 1 KiB at a time). A read that fills the buffer is never held. */
#define SM_TCP_BATCH_MS 3
#define SM_TCP_BATCH_GAP_MS 1
#define SM_TCP_BATCH_RUN 3
#define SM_TCP_TRICKLE_BYTES 512
#define SM_LISTEN_POLL_MS 50      /* first interval of the LISTEN poll, grown 1.5x per poll ... */
#define SM_LISTEN_POLL_MAX_MS 1000 /* ... up to this */
#define SM_EG_MAX_LISTENERS 256   /* SPEC 6.5: trapped process trees (one seccomp listener each) */
#define SM_EG_MAX_DIALS 128       /* SPEC 6.5 EGRESS_MAX_DIALS: connects waiting for the host */
#define SM_EG_DIAL_TIMEOUT_MS 30000 /* a dial the host never answers fails with ETIMEDOUT */
#define SM_EG_MAX_DNS 64          /* SPEC 6.5: DNS queries waiting for the host */
#define SM_EG_DNS_PER_SEC 200     /* queries the stub forwards per second; more are dropped */
#define SM_EG_DNS_MAX_BYTES 512   /* a query (UDP, no EDNS payload beyond this) */
#define SM_EG_DNS_ANSWER_MAX 4096 /* an answer from the host */

/* Errors: a fallible function returns a negative errno and, where the caller answers a request or
 * logs, fills a struct sm_err: the protocol error code (SPEC 9: "EINVAL", "SM_FILE_TOO_LARGE", a
 * violation code...) and a message "<field or path>: <problem>". sm_err_set returns -err. */
struct sm_err {
	const char *code;
	char msg[512];
};
void sm_err_fmt(struct sm_err *e, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* (a macro so that a constant err stays a constant the compiler sees: callers test "< 0") */
#define sm_err_set(e, err, code, ...) (sm_err_fmt((e), (code), __VA_ARGS__), -(err))

/* Cleanup attributes for fds and heap buffers a function owns locally: the fd is closed (errno kept)
 * and the buffer freed when the variable goes out of scope. sm_take_fd / sm_take_ptr hand ownership
 * on (the variable is left at -1 / NULL). */
static inline void sm_closep(int *fd)
{
	if (*fd >= 0) {
		int e = errno;
		close(*fd);
		errno = e;
	}
}
static inline void sm_freep(void *p) { free(*(void **)p); }
#define _cleanup_close_ __attribute__((cleanup(sm_closep)))
#define _cleanup_free_ __attribute__((cleanup(sm_freep)))
static inline int sm_take_fd(int *fd)
{
	int r = *fd;
	*fd = -1;
	return r;
}
#define sm_take_ptr(p)                                                                             \
	({                                                                                         \
		__typeof__(p) sm_taken_ = (p);                                                     \
		(p) = NULL;                                                                        \
		sm_taken_;                                                                         \
	})

/* A small text file (/proc, /sys) into buf, NUL-terminated: the length read, or -errno (buf untouched
 * when the file cannot be opened, empty when the read fails). */
ssize_t sm_read_text(const char *path, char *buf, size_t cap);

struct sm_user {
	uint32_t uid, gid;
	uint32_t groups[SM_MAX_GROUPS];
	int ngroups;
	char name[64];
	char home[256];
};

/* "user", "uid", "user:group", "uid:gid" from root's /etc/passwd and /etc/group: 0, or -EINVAL with err */
int resolve_user(const char *root, const char *spec, struct sm_user *u, struct sm_err *err);

enum start_mode { START_BOOT, START_RESUME, START_NEVER };

struct sm_volume {
	char device[128];
	char path[256];
	bool format;
};

struct sm_config {
	char hostname[65];
	char root_device[128];
	uint32_t tmpfs_mib;
	bool has_workload;
	char **wl_argv; /* NULL-terminated, heap */
	char **wl_env;  /* NULL-terminated, heap */
	char wl_cwd[256];
	char wl_user[256];
	enum start_mode start;
	uint32_t guest_port;
	bool listener_required;
	struct sm_volume volumes[SM_MAX_VOLUMES];
	int nvolumes;
	bool has_net;
	char net_ip[64];
	char net_gw[64];
	char net_dns[64];
};

/* config.c */
/* 0, or -errno with err ("config: <key>: <problem>") */
int config_parse(const uint8_t *buf, size_t len, struct sm_config *c, struct sm_err *err);
void config_free(struct sm_config *c);

/* boot.c */
void sm_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern int sm_debug; /* kernel command line "sm.debug": log transport events */
#define sm_dbg(...)                                                                                \
	do {                                                                                       \
		if (sm_debug)                                                                      \
			sm_log(__VA_ARGS__);                                                       \
	} while (0)
int boot_early(void); /* mounts, modules: before config; -errno when /proc or /sys cannot be mounted */
int boot_root(const struct sm_config *c); /* overlay root, switch root */
void boot_system(const struct sm_config *c); /* hostname, lo, net, volumes, work cgroup */
/* O_WRONLY fd of the work cgroup's cgroup.procs (commands and the workload run there), or -1 */
extern int sm_work_cgroup_fd;
void sm_poweroff(void) __attribute__((noreturn));
int64_t mono_ms(void);
uint64_t meminfo_kib(const char *key); /* a /proc/meminfo value ("MemTotal"...), 0 if missing */

/* agent.c */
int agent_run(struct sm_config *c, int64_t boot_ms);
int agent_serve_fd(struct sm_config *c, int fd); /* host-side tests only */

#endif
