/* Internal header of the agent's protocol server (the files listed in README.md "Layout"):
 * the state shared between them (struct agent, channels, processes, shares, watches) and the
 * functions one file offers the others. Every function takes the agent state explicitly. */
#ifndef SM_AGENT_INT_H
#define SM_AGENT_INT_H

#include "fuse.h"
#include "proto.h"
#include "sm.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

enum wkind { W_PORT = 1, W_SIG, W_CH_R, W_CH_W, W_TCP_CONN, W_VSOCK, W_FJOB };

#define W_FUSE 16 /* watch kind of a share's /dev/fuse (kept apart from the enum above) */
#define W_RDDONE 17 /* eventfd: a stuck pipe read returned (guarded_read) */
#define W_EG_SOCK 18 /* egress: listener fds passed by children */
#define W_EG_LIS 19  /* egress: one seccomp notification fd */
#define W_EG_DNS 20  /* egress: the DNS stub socket */

struct watch {
	uint8_t kind;
	bool reg;
	int fd;
	uint32_t cur;
	void *obj;
};

enum chstate { CH_FREE = 0, CH_OPEN, CH_CLOSING };

struct proc;
struct share;

struct chan {
	uint8_t state;
	bool removed; /* protocol-level: unknown to lookups, resources may linger */
	uint32_t id;
	struct proc *proc;
	bool collect; /* exec collect stream */
	bool tcp;
	/* agent -> host half */
	bool out_open;
	struct watch rw;
	bool r_eof;
	bool r_blocked; /* last read would block */
	bool r_stuck;   /* a guarded read is pending on a worker thread */
	struct rd_worker *rd;
	uint64_t credit;
	uint8_t *cbuf;
	uint32_t clen;
	/* host -> agent half */
	bool in_open;
	bool in_eof;
	struct watch ww;
	bool tty_in;
	uint8_t *ibuf;
	uint32_t ioff, ilen;
	uint64_t granted; /* bytes the host may still send */
	uint64_t consumed;
	struct share *fs; /* fs-attach channel of this share */
	/* tcp-connect pending */
	bool connecting;
	uint32_t req_id;
	int64_t deadline;
	/* tcp read batching (SM_TCP_BATCH_MS): no read before hold_until */
	int64_t hold_until;
	int64_t last_read_ms;
	uint8_t small_run;
	bool streaming;
};

enum pkind { PK_EXEC = 1, PK_SPAWN, PK_WORKLOAD };

/* A live host share (SPEC 6.4). Orphaned = used && !ch: the agent answers EIO itself. */
struct share {
	bool used;
	bool dead; /* /dev/fuse read failed: connection aborted or file system gone */
	char tag[FS_TAG_MAX + 1];
	struct watch w; /* /dev/fuse */
	struct chan *ch;
	uint8_t *req;               /* FS_REQ_BUF: the request being sent to the host */
	uint32_t req_len, req_off;
	struct fs_relay relay;
	char *path; /* fs-attach's path (NULL: none): not one of the users' binds */
};

struct child_spec {
	char **argv;
	char **envp;
	char *cwd;
	struct sm_user user;
};

struct proc {
	bool used;
	uint8_t kind;
	pid_t pid;
	bool exited;
	int status;
	uint64_t peak_rss;
	uint64_t sess;
	struct chan *out, *err, *in;
	int pty; /* master dup for TIOCSWINSZ, -1 */
	bool tty;
	/* exec */
	bool pending;
	uint32_t req_id;
	int64_t deadline;
	bool timed_out, cancelled;
	struct child_spec *chain;
	bool exit_sent;
};

/* Guarded pipe reads (rdworker.c) */
#define RD_WORKERS_MAX 64
#define RD_WAIT_MS 20

struct rd_worker {
	struct rd_pool *pool;
	bool started, busy, done, detached;
	int fd;
	size_t len;
	ssize_t res;
	int err;
	struct chan *c; /* detached: the channel waiting for this read, NULL when it went away */
	uint8_t buf[SM_DATA_CHUNK_BYTES];
};

/* the worker pool: guarded by mu; efd is the eventfd that reports reads that were stuck */
struct rd_pool {
	struct rd_worker *workers[RD_WORKERS_MAX];
	pthread_mutex_t mu;
	pthread_cond_t job_cv, done_cv;
	int efd;
	struct watch w;
};

/* Asynchronous file jobs (fileops.c): while a share is attached, write-file, read-file and an exec's
 * stage files run in a forked child that answers through a pipe. */
#define SM_MAX_FILE_JOBS 16
#define SM_FILE_JOB_TIMEOUT_MS 60000

enum fjob_kind { FJ_WRITE, FJ_READ, FJ_STAGE };
struct exec_cont;

struct file_job {
	bool used;
	enum fjob_kind kind;
	struct exec_cont *cont; /* FJ_STAGE: the exec to launch (owned) */
	struct watch w;
	pid_t pid;
	uint32_t req_id, sess;
	int64_t deadline;
	uint8_t *buf;
	size_t cap, got, limit;
	char *path;
};

struct agent {
	struct sm_config *cfg;
	int64_t boot_ms;
	int ep, sfd;
	struct watch port_w, sig_w;
	int port;
	char port_path[64];
	bool connected;
	int64_t next_port_probe;
	/* session */
	bool session;
	uint64_t sess;
	uint32_t host_max_frame, host_window;
	bool listening_reported;
	uint32_t last_ch;
	uint32_t pending[SM_MAX_PENDING];
	int npending;
	/* io */
	struct cb_buf outq;
	size_t out_off;
	uint8_t *in;
	size_t in_len, in_cap;
	struct cb_item *items;
	/* state */
	struct chan chans[SM_MAX_CHANNELS];
	struct proc procs[SM_MAX_PROCS];
	struct share shares[FS_MAX_SHARES];
	bool helper_installed;
	pid_t wl_pid;
	bool wl_started;
	bool listening_seen;
	int64_t next_listen_poll;
	int64_t listen_interval; /* grows from SM_LISTEN_POLL_MS to SM_LISTEN_POLL_MAX_MS */
	bool shutting_down;
	bool exit_on_hup; /* test mode */
	uint32_t tmp_counter;
	/* egress (SPEC 6.5), only as PID 1 without a configured network device */
	bool eg_on;
	int eg_pair[2]; /* [0] agent end (watched), [1] children send their listener on it */
	struct watch eg_w, eg_dns_w;
	struct eg_lis {
		bool used;
		struct watch w;
	} eg_lis[SM_EG_MAX_LISTENERS];
	struct eg_dial {
		bool used;
		uint32_t id;
		struct eg_lis *lis;
		uint64_t notif;
		int sock, family;
		int64_t deadline;
	} eg_dials[SM_EG_MAX_DIALS];
	uint32_t eg_next_dial, eg_next_q;
	struct eg_q {
		bool used;
		uint32_t id;
		int64_t t;
		struct sockaddr_in from;
	} eg_q[SM_EG_MAX_DNS];
	int64_t eg_dns_window;
	uint32_t eg_dns_count;
	int eg_child_fd; /* send end of eg_pair for child_exec (-1: no trap) */
	struct rd_pool rd;
	struct file_job fjobs[SM_MAX_FILE_JOBS];
	struct watch vsock_w; /* vsock.c: a complete host hello on another transport */
	size_t fb_start;      /* the frame being built in outq */
	uint8_t rdbuf[SM_DATA_CHUNK_BYTES];
};

/* An exec whose stage files a file job is writing (a share is attached); launched when it is done. */
struct exec_cont {
	struct exec_args a;
	bool spawn;
	struct proc *p;
	struct child_spec *s;
};

/* runs fn(ctx, write end of a pipe) in a forked child (guarded_fork, fjob_start) */
typedef void (*guard_fn)(void *ctx, int wr);

/* out.c */
/* a frame: frame_start (a map of pairs entries, the first "t": t), the other pairs, fend */
void frame_start(struct agent *ag, const char *t, unsigned pairs);
bool fend(struct agent *ag);
size_t outq_pending(struct agent *ag);
void outq_drop(struct agent *ag);
void kv_text(struct agent *ag, const char *k, const char *v);
void kv_uint(struct agent *ag, const char *k, uint64_t v);
void send_fatal(struct agent *ag, const char *code, const char *msg);
void res_begin(struct agent *ag, uint32_t id, unsigned result_pairs);
void pending_del(struct agent *ag, uint32_t id);
bool pending_has(struct agent *ag, uint32_t id);
void res_empty(struct agent *ag, uint32_t id);
void res_error(struct agent *ag, uint32_t id, const char *code, const char *msg);
void res_err(struct agent *ag, uint32_t id, const struct sm_err *e);
const char *errno_code(int e);
void res_errno(struct agent *ag, uint32_t id, int e, const char *what);
void send_chan_frame(struct agent *ag, const char *t, uint32_t ch);
void send_credit(struct agent *ag, uint32_t ch, uint64_t n);
void send_data(struct agent *ag, uint32_t ch, const uint8_t *p, size_t n);
void evt_begin(struct agent *ag, const char *ev, unsigned pairs);
void enc_exit_fields(struct agent *ag, const struct proc *p);

/* loop.c */
void watch_set(struct agent *ag, struct watch *w, uint32_t want);
void watch_close(struct agent *ag, struct watch *w);
void reap(struct agent *ag);

/* chan.c */
int chan_free_slots(struct agent *ag);
struct chan *chan_alloc(struct agent *ag, uint32_t id);
void chan_release(struct agent *ag, struct chan *c);
void chan_maybe_release(struct agent *ag, struct chan *c);
void chan_send_close(struct agent *ag, struct chan *c);
void chan_write(struct agent *ag, struct chan *c);
void collect_flush(struct agent *ag, struct chan *c);
void chan_read_eof(struct agent *ag, struct chan *c);
bool chan_pump(struct agent *ag, struct chan *c, int max_reads);
bool ids_fresh(struct agent *ag, const uint32_t *ids, int n);
void ids_commit(struct agent *ag, const uint32_t *ids, int n);
void in_eof(struct agent *ag, struct chan *c);
void tcp_connected(struct agent *ag, struct chan *c, int err);
void op_tcp_connect(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);
void handle_chan_frame(struct agent *ag, const struct cb_doc *d, const struct frame_info *fi);

/* rdworker.c */
void rd_init(struct agent *ag);
ssize_t guarded_read(struct agent *ag, struct chan *c, uint8_t *buf, size_t len);
void rd_forget(struct agent *ag, struct chan *c);
void rd_collect(struct agent *ag);

/* spawn.c */
void spec_free(struct child_spec *s);
const char *env_lookup(char **envp, const char *key);
pid_t spawn_child(struct agent *ag, struct child_spec *s, int in, int out, int err, bool tty, int slave,
		  bool new_session);
char *item_strdup(const struct cb_doc *d, int i);
int build_spec(struct agent *ag, const struct cb_doc *d, const struct cmd_args *c, struct child_spec **out,
	       struct sm_err *e);
int set_nonblock(int fd);
pid_t start_child(struct agent *ag, struct child_spec *s, bool tty, uint16_t cols, uint16_t rows, bool want_in,
		  int *outfd, int *errfd, int *infd, int *ptyfd);

/* proc.c */
struct proc *proc_alloc(struct agent *ag);
struct proc *proc_by_pid(struct agent *ag, pid_t pid);
void kill_group(pid_t pid);
void exec_cont_free(struct exec_cont *k);
void op_exec(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);
void op_spawn(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);
void exec_launch(struct agent *ag, uint32_t id, const struct exec_args *ap, bool spawn, struct proc *p,
		 struct child_spec *s);
void proc_check_done(struct agent *ag, struct proc *p);
void op_signal(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);
void op_resize(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);
void op_close_stdin(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);

/* workload.c */
void workload_start(struct agent *ag);
void listen_poll(struct agent *ag, int64_t now);
void op_workload_signal(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);

/* fileops.c */
int mkdir_parents(const char *path);
int write_whole(int fd, const uint8_t *p, size_t n);
ssize_t guarded_fork(guard_fn fn, void *ctx, uint8_t *out, size_t cap);
int do_stage(const struct cb_doc *d, int stage, struct sm_err *e);
void stage_start(struct agent *ag, uint32_t id, const struct cb_doc *d, int stage, char *what, struct exec_cont *k);
void op_write_file(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);
void fjob_readable(struct agent *ag, struct file_job *j);
void fjob_timers(struct agent *ag, int64_t now);
int64_t fjob_next_deadline(struct agent *ag, int64_t t, int64_t now);
void op_read_file(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);

/* egress_glue.c */
void eg_take_listeners(struct agent *ag);
void eg_notified(struct agent *ag, struct eg_lis *l, uint32_t ev);
void op_dial_answer(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);
void eg_dns_read(struct agent *ag);
void op_dns_answer(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);
void eg_session_reset(struct agent *ag);
void eg_timers(struct agent *ag, int64_t now);
void eg_init(struct agent *ag);

/* session.c */
void session_reset(struct agent *ag);
void violation(struct agent *ag, const char *code, const char *msg);
size_t process_input(struct agent *ag);

/* shares.c */
void share_orphan(struct share *s);
void share_send(struct agent *ag, struct share *s);
void share_pump(struct agent *ag, struct share *s);
void share_from_host(struct agent *ag, struct chan *c, const uint8_t *p, uint32_t n);
bool any_share(struct agent *ag);
void op_fs_attach(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);
void op_fs_detach(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);

/* transport.c */
void flush_now(struct agent *ag);
void flush_blocking(struct agent *ag, int timeout_ms);
void port_disconnected(struct agent *ag);
void transport_take(struct agent *ag);
void port_probe(struct agent *ag);
void port_read(struct agent *ag);
void port_write(struct agent *ag);
int open_port(struct agent *ag);

#endif
