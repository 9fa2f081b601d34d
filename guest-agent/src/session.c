/* The session (SPEC 4-5): hello and resynchronisation, the ops table and request dispatch,
 * violations, resume, stats, shutdown. */
#include "agent_int.h"
#include "ops.h"
#include "fuse.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* from <linux/random.h>; defined here because musl ships no kernel headers */
#define SM_RNDADDENTROPY _IOW('R', 0x03, int[2])
#define SM_RNDRESEEDCRNG _IO('R', 0x07)

static void op_resume(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	uint64_t tns;
	int ei;
	struct sm_err e;
	if (args_uint(d, args, "timeNs", true, 0, UINT64_MAX, &tns, &e) < 0 ||
	    args_bytes(d, args, "entropy", &ei, &e) < 0) {
		res_err(ag, id, &e);
		return;
	}
	uint32_t elen = d->items[ei].len;
	if (elen < SM_ENTROPY_MIN || elen > SM_ENTROPY_MAX) {
		res_error(ag, id, "EINVAL", "entropy: must be 32..512 bytes");
		return;
	}
	struct timespec ts = {.tv_sec = (time_t)(tns / 1000000000ull), .tv_nsec = (long)(tns % 1000000000ull)};
	if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
		res_errno(ag, id, errno, "clock_settime");
		return;
	}
	struct {
		int entropy_count;
		int buf_size;
		uint8_t buf[SM_ENTROPY_MAX];
	} rpi;
	rpi.entropy_count = (int)elen * 8;
	rpi.buf_size = (int)elen;
	memcpy(rpi.buf, cb_ptr(d, (uint32_t)ei), elen);
	{
		_cleanup_close_ int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
		if (fd < 0 || ioctl(fd, SM_RNDADDENTROPY, &rpi) < 0) {
			res_errno(ag, id, errno, "RNDADDENTROPY");
			return;
		}
		/* force the CRNG to reseed now so getrandom() diverges between two restores */
		if (ioctl(fd, SM_RNDRESEEDCRNG) < 0)
			sm_log("RNDRESEEDCRNG: %s", strerror(errno));
	}
	memset(&rpi, 0, sizeof(rpi));
	res_empty(ag, id);
	if (ag->cfg->start == START_RESUME) {
		/* Send the answer before starting the workload: the first fork after a restore costs
		 * tens of milliseconds under TCG and the host hands the VM out on this answer. Requests
		 * that follow are read only after the workload has started, so their order holds. */
		flush_now(ag);
		workload_start(ag);
	}
}

static void op_stats(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	(void)d, (void)args;
	uint64_t total = meminfo_kib("MemTotal"), avail = meminfo_kib("MemAvailable");
	uint64_t load = 0;
	FILE *f = fopen("/proc/loadavg", "re");
	if (f) {
		unsigned long a = 0, b = 0;
		if (fscanf(f, "%lu.%lu", &a, &b) == 2)
			load = (uint64_t)a * 1000 + (uint64_t)b * 10; /* two decimals in /proc/loadavg */
		fclose(f);
	}
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	res_begin(ag, id, 4);
	kv_uint(ag, "memTotalKib", total);
	kv_uint(ag, "memAvailKib", avail);
	kv_uint(ag, "uptimeMs", (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
	kv_uint(ag, "loadAvg1Milli", load);
	fend(ag);
}

static void op_shutdown(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	(void)d, (void)args;
	res_empty(ag, id);
	flush_blocking(ag, 1000);
	sm_poweroff();
}

static void op_ping(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args)
{
	(void)d, (void)args;
	res_empty(ag, id);
}

typedef void op_handler(struct agent *ag, uint32_t id, const struct cb_doc *d, uint32_t args);

/* The ops table (ops.h): a row without a handler is a capability that is no op. */
static const struct op_row {
	const char *name;
	op_handler *handler;
	enum sm_need need;
} ops[] = {
#define SM_OP_ROW(name, handler, check, need) {name, handler, need},
	SM_OPS(SM_OP_ROW)
#undef SM_OP_ROW
};
#define NOPS (sizeof(ops) / sizeof(ops[0]))

static bool need_met(const struct agent *ag, enum sm_need need)
{
	switch (need) {
	case SM_NEED_WORK_CGROUP: return sm_work_cgroup_fd >= 0;
	case SM_NEED_EGRESS: return ag->eg_on;
	default: return true;
	}
}

static void dispatch_req(struct agent *ag, const struct cb_doc *d, const struct frame_info *fi)
{
	uint32_t id = fi->id;
	if (pending_has(ag, id)) {
		violation(ag, E_DUPLICATE_ID, "req id is still pending");
		return;
	}
	if (ag->npending >= SM_MAX_PENDING) {
		res_error(ag, id, "EBUSY", "too many pending requests");
		return;
	}
	uint32_t op = fi->op;
	for (size_t i = 0; i < NOPS; i++)
		if (ops[i].handler && need_met(ag, ops[i].need) && cb_text_eq(d, op, ops[i].name)) {
			ops[i].handler(ag, id, d, fi->args);
			return;
		}
	char msg[128];
	size_t n = d->items[op].len; /* op text is not NUL-terminated */
	snprintf(msg, sizeof(msg), "unknown op %.*s", (int)(n > 64 ? 64 : n), (const char *)cb_ptr(d, op));
	res_error(ag, id, "SM_UNKNOWN_OP", msg);
}

void session_reset(struct agent *ag)
{
	for (int i = 0; i < SM_MAX_PROCS; i++) {
		struct proc *p = &ag->procs[i];
		if (!p->used)
			continue;
		if (p->kind == PK_EXEC && p->pending) {
			kill_group(p->pid);
			p->pending = false;
			p->cancelled = true;
		}
	}
	for (int i = 0; i < SM_MAX_CHANNELS; i++) {
		struct chan *c = &ag->chans[i];
		if (c->state == CH_FREE)
			continue;
		if (c->proc) {
			struct proc *p = c->proc;
			if (p->out == c)
				p->out = NULL;
			if (p->err == c)
				p->err = NULL;
			if (p->in == c)
				p->in = NULL;
		}
		c->proc = NULL;
		chan_release(ag, c);
	}
	ag->npending = 0;
	ag->last_ch = 0;
	ag->session = false;
	eg_session_reset(ag);
	ag->listening_reported = false;
	outq_drop(ag);
	/* processes whose channels vanished may now be complete */
	for (int i = 0; i < SM_MAX_PROCS; i++)
		if (ag->procs[i].used)
			proc_check_done(ag, &ag->procs[i]);
}

static void handle_hello(struct agent *ag, const struct frame_info *fi)
{
	sm_dbg("hello from host (nonce %u)", fi->nonce);
	session_reset(ag);
	if (fi->v < SM_PROTO_VERSION) {
		char msg[64];
		snprintf(msg, sizeof(msg), "agent speaks protocol version %d only", SM_PROTO_VERSION);
		send_fatal(ag, E_VERSION, msg);
		return;
	}
	ag->session = true;
	ag->sess++;
	ag->host_max_frame = (uint32_t)fi->max_frame;
	ag->host_window = (uint32_t)fi->window;
	frame_start(ag, "hello", fi->has_nonce ? 10 : 9);
	kv_uint(ag, "v", SM_PROTO_VERSION);
	kv_text(ag, "agent", SM_AGENT_VERSION);
	size_t ncaps = 0;
	for (size_t i = 0; i < NOPS; i++)
		ncaps += need_met(ag, ops[i].need);
	cbe_text(&ag->outq, "caps");
	cbe_array(&ag->outq, ncaps);
	for (size_t i = 0; i < NOPS; i++)
		if (need_met(ag, ops[i].need))
			cbe_text(&ag->outq, ops[i].name);
	kv_uint(ag, "maxFrame", SM_MAX_FRAME_BYTES);
	kv_uint(ag, "window", SM_WINDOW_BYTES);
	cbe_text(&ag->outq, "ready");
	cbe_bool(&ag->outq, true);
	cbe_text(&ag->outq, "listening");
	if (ag->listening_seen)
		cbe_uint(&ag->outq, ag->cfg->guest_port);
	else
		cbe_null(&ag->outq);
	kv_uint(ag, "bootMs", (uint64_t)ag->boot_ms);
	if (fi->has_nonce)
		kv_uint(ag, "nonce", fi->nonce);
	fend(ag);
	ag->listening_reported = ag->listening_seen;
}

/* Protocol violation: tell the host, drop the session, resynchronise. */
void violation(struct agent *ag, const char *code, const char *msg)
{
	sm_log("protocol violation %s: %s", code, msg);
	session_reset(ag);
	send_fatal(ag, code, msg);
	/* the fatal frame must reach the host although the session is gone */
	ag->host_max_frame = SM_MAX_FRAME_BYTES;
}

static void handle_frame(struct agent *ag, const uint8_t *body, size_t len)
{
	struct cb_doc d;
	struct frame_info fi;
	struct sm_err e;
	uint32_t cap = len < SM_MAX_ITEMS ? (uint32_t)len : SM_MAX_ITEMS;
	_cleanup_free_ struct cb_item *items = malloc((size_t)cap * sizeof(*items));
	if (!items) {
		violation(ag, E_BAD_CBOR, "out of memory for the frame");
		return;
	}
	uint32_t maxd = SM_MAX_FRAME_BYTES - SM_DATA_OVERHEAD_BYTES;
	if (proto_check_frame(&d, body, len, items, cap, maxd, &fi, &e) < 0) {
		violation(ag, e.code, e.msg);
		return;
	}
	switch (fi.kind) {
	case FK_HELLO:
		handle_hello(ag, &fi);
		break;
	case FK_REQ:
		dispatch_req(ag, &d, &fi);
		break;
	case FK_FATAL:
		sm_log("host sent fatal; session dropped");
		session_reset(ag);
		break;
	default:
		handle_chan_frame(ag, &d, &fi);
		break;
	}
}

static bool hello_candidate(const uint8_t *p)
{
	static const uint8_t marker[8] = {0x61, 0x74, 0x65, 0x68, 0x65, 0x6c, 0x6c, 0x6f};
	uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	return n >= 1 && n <= SM_MAX_FRAME_BYTES && p[4] >= 0xa1 && p[4] <= 0xb7 &&
	       memcmp(p + 5, marker, 8) == 0;
}

/* Process buffered input. Returns bytes consumed. */
size_t process_input(struct agent *ag)
{
	size_t off = 0;
	while (ag->in_len - off >= 4) {
		uint8_t *p = ag->in + off;
		size_t avail = ag->in_len - off;
		if (!ag->session) {
			/* resynchronisation scan (SPEC 4.4) */
			if (avail < 13)
				break;
			if (!hello_candidate(p)) {
				off++;
				continue;
			}
			uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
			if (avail < 4 + (size_t)n) {
				/* A stale candidate may claim a length that never arrives; if a later
				 * candidate is already complete, this one cannot be the live hello. */
				bool later = false;
				for (size_t q = 1; q + 13 <= avail && !later; q++) {
					if (!hello_candidate(p + q))
						continue;
					uint32_t m = (uint32_t)p[q] << 24 | (uint32_t)p[q + 1] << 16 |
						     (uint32_t)p[q + 2] << 8 | p[q + 3];
					later = avail - q >= 4 + (size_t)m;
				}
				if (later) {
					off++;
					continue;
				}
				break;
			}
			struct cb_doc d;
			struct frame_info fi;
			struct sm_err e;
			uint32_t cap = n < SM_MAX_ITEMS ? n : SM_MAX_ITEMS;
			struct cb_item *items = malloc((size_t)cap * sizeof(*items));
			if (!items)
				break;
			int r = proto_check_frame(&d, p + 4, n, items, cap, SM_MAX_FRAME_BYTES, &fi, &e);
			free(items);
			if (r == 0 && fi.kind == FK_HELLO) {
				handle_hello(ag, &fi);
				off += 4 + (size_t)n;
			} else {
				off += r == 0 ? 4 + (size_t)n : 1;
			}
			continue;
		}
		uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
		if (n == 0) {
			violation(ag, E_FRAME_EMPTY, "frame length 0");
			off += 4;
			continue;
		}
		if (n > SM_MAX_FRAME_BYTES) {
			violation(ag, E_FRAME_TOO_LARGE, "frame longer than maxFrame");
			off += 4;
			continue;
		}
		if (avail < 4 + (size_t)n)
			break;
		handle_frame(ag, p + 4, n);
		off += 4 + (size_t)n;
		if (ag->shutting_down)
			break;
	}
	return off;
}
