#include "proto.h"
#include "fuse.h"
#include "ops.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* a frame-level violation (SPEC 9.1): -EPROTO with the violation code */
static int bad(struct sm_err *e, const char *c, const char *what, const char *field)
{
	return sm_err_set(e, EPROTO, c, "%s%s%s", field ? field : "", field ? ": " : "", what);
}

static int get_u(const struct cb_doc *d, uint32_t map, const char *key, bool required, uint64_t max,
		 uint64_t *out, struct sm_err *e)
{
	int i = cb_map_get(d, map, key);
	if (i < 0) {
		if (required)
			return bad(e, E_BAD_FRAME, "missing", key);
		return 0;
	}
	if (d->items[i].type != CB_UINT || d->items[i].u > max)
		return bad(e, E_BAD_FRAME, "must be an unsigned integer in range", key);
	*out = d->items[i].u;
	return 1;
}

static int get_t(const struct cb_doc *d, uint32_t map, const char *key, bool required, uint32_t max,
		 int *out, struct sm_err *e)
{
	int i = cb_map_get(d, map, key);
	if (i < 0) {
		if (required)
			return bad(e, E_BAD_FRAME, "missing", key);
		return 0;
	}
	if (d->items[i].type != CB_TEXT || d->items[i].len > max)
		return bad(e, E_BAD_FRAME, "must be a text of limited length", key);
	*out = i;
	return 1;
}

int proto_frame_len(const uint8_t *p, size_t avail, uint32_t max_frame, size_t *total, struct sm_err *e)
{
	if (avail < 4)
		return 0;
	uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	if (n == 0)
		return sm_err_set(e, EPROTO, E_FRAME_EMPTY, "frame length 0");
	if (n > max_frame)
		return sm_err_set(e, EPROTO, E_FRAME_TOO_LARGE, "frame longer than maxFrame");
	if (avail - 4 < n)
		return 0;
	*total = 4 + (size_t)n;
	return 1;
}

int proto_check_frame(struct cb_doc *doc, const uint8_t *body, size_t len, struct cb_item *items,
		      uint32_t cap, uint32_t max_data, struct frame_info *fi, struct sm_err *e)
{
	const char *derr = NULL;
	memset(fi, 0, sizeof(*fi));
	if (len == 0)
		return bad(e, E_FRAME_EMPTY, "empty frame", NULL);
	if (cb_decode(doc, body, len, items, cap, &derr) < 0)
		return bad(e, E_BAD_CBOR, derr, NULL);
	if (doc->items[0].type != CB_MAP)
		return bad(e, E_BAD_FRAME, "frame is not a map", NULL);
	int t = cb_map_get(doc, 0, "t");
	if (t < 0 || doc->items[t].type != CB_TEXT)
		return bad(e, E_BAD_FRAME, "missing or non-text frame type", "t");
	uint32_t tt = (uint32_t)t;
	uint64_t v = 0;
	int idx;
	if (cb_text_eq(doc, tt, "hello")) {
		fi->kind = FK_HELLO;
		if (get_u(doc, 0, "v", true, UINT64_MAX, &fi->v, e) < 0 ||
		    get_t(doc, 0, "host", true, 256, &idx, e) < 0 ||
		    get_u(doc, 0, "maxFrame", true, UINT64_MAX, &fi->max_frame, e) < 0 ||
		    get_u(doc, 0, "window", true, UINT64_MAX, &fi->window, e) < 0)
			return -EPROTO;
		int r = get_u(doc, 0, "nonce", false, UINT32_MAX, &v, e);
		if (r < 0) {
			/* nonce: null is the same as absent */
			int ni = cb_map_get(doc, 0, "nonce");
			if (doc->items[ni].type != CB_NULL)
				return -EPROTO;
			r = 0;
		}
		fi->has_nonce = r > 0;
		fi->nonce = (uint32_t)v;
		if (fi->max_frame < SM_MIN_FRAME_BYTES)
			return bad(e, E_BAD_FRAME, "below 1048576", "maxFrame");
		if (fi->max_frame > SM_MAX_FRAME_BYTES)
			fi->max_frame = SM_MAX_FRAME_BYTES;
		if (fi->window < SM_MIN_WINDOW_BYTES || fi->window > SM_MAX_WINDOW_BYTES)
			return bad(e, E_BAD_FRAME, "out of range", "window");
		return 0;
	}
	if (cb_text_eq(doc, tt, "req")) {
		fi->kind = FK_REQ;
		int op, args;
		if (get_u(doc, 0, "id", true, UINT32_MAX, &v, e) < 0 ||
		    get_t(doc, 0, "op", true, 64, &op, e) < 0)
			return -EPROTO;
		fi->id = (uint32_t)v;
		fi->op = (uint32_t)op;
		args = cb_map_get(doc, 0, "args");
		if (args < 0 || doc->items[args].type != CB_MAP)
			return bad(e, E_BAD_FRAME, "missing or not a map", "args");
		fi->args = (uint32_t)args;
		return 0;
	}
	bool is_data = cb_text_eq(doc, tt, "data"), is_credit = cb_text_eq(doc, tt, "credit");
	bool is_eof = cb_text_eq(doc, tt, "eof"), is_close = cb_text_eq(doc, tt, "close");
	if (is_data || is_credit || is_eof || is_close) {
		fi->kind = is_data ? FK_DATA : is_credit ? FK_CREDIT : is_eof ? FK_EOF : FK_CLOSE;
		if (get_u(doc, 0, "ch", true, UINT32_MAX, &v, e) < 0)
			return -EPROTO;
		if (v == 0)
			return bad(e, E_BAD_FRAME, "channel id 0", "ch");
		fi->ch = (uint32_t)v;
		if (is_data) {
			int di = cb_map_get(doc, 0, "d");
			if (di < 0 || doc->items[di].type != CB_BYTES)
				return bad(e, E_BAD_FRAME, "missing or not bytes", "d");
			if (doc->items[di].len == 0 || doc->items[di].len > max_data)
				return bad(e, E_BAD_FRAME, "length out of range", "d");
			fi->d = (uint32_t)di;
		}
		if (is_credit) {
			if (get_u(doc, 0, "n", true, UINT64_MAX, &fi->n, e) < 0)
				return -EPROTO;
			if (fi->n == 0)
				return bad(e, E_BAD_FRAME, "must be >= 1", "n");
		}
		return 0;
	}
	if (cb_text_eq(doc, tt, "fatal")) {
		fi->kind = FK_FATAL;
		if (get_t(doc, 0, "code", true, 64, &idx, e) < 0 ||
		    get_t(doc, 0, "message", true, 4096, &idx, e) < 0)
			return -EPROTO;
		return 0;
	}
	char tn[80];
	size_t n = doc->items[tt].len < 64 ? doc->items[tt].len : 64;
	memcpy(tn, cb_ptr(doc, tt), n);
	tn[n] = 0;
	e->code = E_UNKNOWN_FRAME;
	snprintf(e->msg, sizeof(e->msg), "frame type \"%s\" not accepted by the agent", tn);
	return -EPROTO;
}

/* ---- request arguments (errors are EINVAL responses, not violations) ---- */

/* a request argument problem: -EINVAL, code EINVAL, "<field>: <what>" */
static int einval(struct sm_err *e, const char *field, const char *what)
{
	return sm_err_set(e, EINVAL, "EINVAL", "%s: %s", field, what);
}

int args_uint(const struct cb_doc *d, uint32_t map, const char *key, bool required, uint64_t min,
	      uint64_t max, uint64_t *out, struct sm_err *e)
{
	int i = cb_map_get(d, map, key);
	if (i < 0 || d->items[i].type == CB_NULL) {
		if (required)
			return einval(e, key, "required");
		return 0;
	}
	if (d->items[i].type != CB_UINT)
		return einval(e, key, "must be an unsigned integer");
	if (d->items[i].u < min || d->items[i].u > max)
		return einval(e, key, "out of range");
	*out = d->items[i].u;
	return 1;
}

int args_bool(const struct cb_doc *d, uint32_t map, const char *key, bool def, bool *out, struct sm_err *e)
{
	int i = cb_map_get(d, map, key);
	*out = def;
	if (i < 0 || d->items[i].type == CB_NULL)
		return 0;
	if (d->items[i].type != CB_TRUE && d->items[i].type != CB_FALSE)
		return einval(e, key, "must be a boolean");
	*out = d->items[i].type == CB_TRUE;
	return 1;
}

static bool text_ok(const struct cb_doc *d, uint32_t i, uint32_t max)
{
	return d->items[i].type == CB_TEXT && d->items[i].len <= max &&
	       !memchr(cb_ptr(d, i), 0, d->items[i].len);
}

static int check_path_item(const struct cb_doc *d, uint32_t i, const char *key, struct sm_err *e)
{
	if (!text_ok(d, i, SM_PATH_MAX_BYTES) || d->items[i].len == 0 || cb_ptr(d, i)[0] != '/')
		return einval(e, key, "must be an absolute path without NUL, <= 4096 bytes");
	return 0;
}

int args_path(const struct cb_doc *d, uint32_t map, const char *key, int *out, struct sm_err *e)
{
	int i = cb_map_get(d, map, key);
	if (i < 0 || d->items[i].type == CB_NULL)
		return einval(e, key, "required");
	if (check_path_item(d, (uint32_t)i, key, e) < 0)
		return -EINVAL;
	*out = i;
	return 0;
}

int args_bytes(const struct cb_doc *d, uint32_t map, const char *key, int *out, struct sm_err *e)
{
	int i = cb_map_get(d, map, key);
	if (i < 0 || d->items[i].type == CB_NULL)
		return einval(e, key, "required");
	if (d->items[i].type != CB_BYTES)
		return einval(e, key, "must be bytes");
	*out = i;
	return 0;
}

static int args_cmd(const struct cb_doc *d, uint32_t map, const char *prefix, struct cmd_args *c,
		    struct sm_err *e)
{
	char f[32];
	c->env = c->cwd = c->user = -1;
	int a = cb_map_get(d, map, "argv");
	snprintf(f, sizeof(f), "%sargv", prefix);
	if (a < 0 || d->items[a].type != CB_ARRAY)
		return einval(e, f, "required array of text");
	if (d->items[a].count < 1 || d->items[a].count > SM_ARGV_MAX)
		return einval(e, f, "must have 1..4096 entries");
	uint32_t k = (uint32_t)a + 1;
	for (uint32_t i = 0; i < d->items[a].count; i++) {
		if (!text_ok(d, k, SM_ARG_BYTES_MAX))
			return einval(e, f, "entries must be text without NUL, <= 131072 bytes");
		k = d->items[k].next;
	}
	if (d->items[(uint32_t)a + 1].len == 0)
		return einval(e, f, "argv[0] is empty");
	c->argv = a;
	int envi = cb_map_get(d, map, "env");
	snprintf(f, sizeof(f), "%senv", prefix);
	if (envi >= 0 && d->items[envi].type != CB_NULL) {
		if (d->items[envi].type != CB_MAP)
			return einval(e, f, "must be a map text->text");
		if (d->items[envi].count > SM_ENV_MAX)
			return einval(e, f, "more than 4096 entries");
		k = (uint32_t)envi + 1;
		for (uint32_t i = 0; i < d->items[envi].count; i++) {
			uint32_t val = d->items[k].next;
			if (!text_ok(d, k, SM_ARG_BYTES_MAX) || d->items[k].len == 0 ||
			    memchr(cb_ptr(d, k), '=', d->items[k].len))
				return einval(e, f, "keys must be non-empty text without '=' or NUL");
			if (!text_ok(d, val, SM_ARG_BYTES_MAX))
				return einval(e, f, "values must be text without NUL");
			k = d->items[val].next;
		}
		c->env = envi;
	}
	int w = cb_map_get(d, map, "cwd");
	snprintf(f, sizeof(f), "%scwd", prefix);
	if (w >= 0 && d->items[w].type != CB_NULL) {
		if (check_path_item(d, (uint32_t)w, f, e) < 0)
			return -EINVAL;
		c->cwd = w;
	}
	int u = cb_map_get(d, map, "user");
	snprintf(f, sizeof(f), "%suser", prefix);
	if (u >= 0 && d->items[u].type != CB_NULL) {
		if (!text_ok(d, (uint32_t)u, 255) || d->items[u].len == 0)
			return einval(e, f, "must be a non-empty text without NUL, <= 255 bytes");
		c->user = u;
	}
	return 0;
}

int args_exec(const struct cb_doc *d, uint32_t args, bool spawn, struct exec_args *a, struct sm_err *e)
{
	uint64_t v;
	memset(a, 0, sizeof(*a));
	a->stage = a->chain = -1;
	a->cols = 80;
	a->rows = 24;
	if (args_cmd(d, args, "", &a->cmd, e) < 0)
		return -EINVAL;
	int s = cb_map_get(d, args, "stage");
	if (s >= 0 && d->items[s].type != CB_NULL) {
		if (d->items[s].type != CB_ARRAY || d->items[s].count > SM_STAGE_MAX)
			return einval(e, "stage", "must be an array of <= 1024 entries");
		uint32_t k = (uint32_t)s + 1;
		for (uint32_t i = 0; i < d->items[s].count; i++) {
			int p, dd;
			if (d->items[k].type != CB_MAP)
				return einval(e, "stage", "entries must be maps");
			if (args_path(d, k, "path", &p, e) < 0 ||
			    args_bytes(d, k, "data", &dd, e) < 0 ||
			    args_uint(d, k, "mode", false, 0, UINT32_MAX, &v, e) < 0)
				return -EINVAL;
			if (d->items[dd].len > SM_MAX_FILE_BYTES) {
				return sm_err_set(e, EFBIG, "SM_FILE_TOO_LARGE", "stage.data: larger than 4194304 bytes");
			}
			k = d->items[k].next;
		}
		a->stage = s;
	}
	if (!spawn && args_uint(d, args, "timeoutMs", false, 0, UINT64_MAX, &a->timeout_ms, e) < 0)
		return -EINVAL;
	int c = cb_map_get(d, args, "chain");
	if (c >= 0 && d->items[c].type != CB_NULL) {
		if (d->items[c].type != CB_MAP)
			return einval(e, "chain", "must be a map or null");
		if (args_cmd(d, (uint32_t)c, "chain.", &a->chain_cmd, e) < 0)
			return -EINVAL;
		a->chain = c;
	}
	if (args_bool(d, args, "tty", false, &a->tty, e) < 0)
		return -EINVAL;
	v = 80;
	if (args_uint(d, args, "cols", false, 1, 65535, &v, e) < 0)
		return -EINVAL;
	a->cols = (uint16_t)v;
	v = 24;
	if (args_uint(d, args, "rows", false, 1, 65535, &v, e) < 0)
		return -EINVAL;
	a->rows = (uint16_t)v;
	if (args_uint(d, args, "chOut", true, 1, UINT32_MAX, &v, e) < 0)
		return -EINVAL;
	a->ch_out = (uint32_t)v;
	int r = args_uint(d, args, "chErr", !a->tty, 1, UINT32_MAX, &v, e);
	if (r < 0)
		return -EINVAL;
	a->has_ch_err = r > 0 && !a->tty;
	a->ch_err = a->has_ch_err ? (uint32_t)v : 0;
	if (spawn) {
		if (args_uint(d, args, "chIn", true, 1, UINT32_MAX, &v, e) < 0)
			return -EINVAL;
		a->ch_in = (uint32_t)v;
	}
	if ((a->has_ch_err && a->ch_err == a->ch_out) ||
	    (spawn && (a->ch_in == a->ch_out || (a->has_ch_err && a->ch_in == a->ch_err))))
		return einval(e, "chOut", "channel ids of one request must be distinct");
	return 0;
}

int args_tag(const struct cb_doc *d, uint32_t map, const char *key, char *out, struct sm_err *e)
{
	int i = cb_map_get(d, map, key);
	if (i < 0 || d->items[i].type == CB_NULL)
		return einval(e, key, "required");
	if (d->items[i].type != CB_TEXT ||
	    !fs_tag_valid((const char *)cb_ptr(d, (uint32_t)i), d->items[i].len))
		return einval(e, key, "must be 1..35 bytes of [A-Za-z0-9._-], not \".\" or \"..\"");
	memcpy(out, cb_ptr(d, (uint32_t)i), d->items[i].len);
	out[d->items[i].len] = 0;
	return 0;
}

int args_fs_attach(const struct cb_doc *d, uint32_t args, char *tag, uint32_t *ch, int *path, struct sm_err *e)
{
	uint64_t v;
	if (args_tag(d, args, "tag", tag, e) < 0 ||
	    args_uint(d, args, "ch", true, 1, UINT32_MAX, &v, e) < 0)
		return -EINVAL;
	*ch = (uint32_t)v;
	*path = -1;
	int p = cb_map_get(d, args, "path");
	if (p >= 0 && d->items[p].type != CB_NULL) {
		if (args_path(d, args, "path", path, e) < 0)
			return -EINVAL;
	}
	return 0;
}

int args_dial_answer(const struct cb_doc *d, uint32_t args, uint32_t *id, uint32_t *ch, int *error, struct sm_err *e)
{
	uint64_t v, c = 0;
	if (args_uint(d, args, "id", true, 1, UINT32_MAX, &v, e) < 0 ||
	    args_uint(d, args, "ch", false, 1, UINT32_MAX, &c, e) < 0)
		return -EINVAL;
	int ei = cb_map_get(d, args, "error");
	if (ei >= 0 && d->items[ei].type == CB_NULL)
		ei = -1;
	if (ei >= 0 && (d->items[ei].type != CB_TEXT || d->items[ei].len < 1 || d->items[ei].len > 64))
		return einval(e, "error", "must be text (1..64 bytes)");
	if ((ei >= 0) == (c != 0))
		return einval(e, "ch", "exactly one of ch and error is required");
	*id = (uint32_t)v;
	*ch = (uint32_t)c;
	*error = ei;
	return 0;
}

int args_dns_answer(const struct cb_doc *d, uint32_t args, uint32_t *id, int *answer, struct sm_err *e)
{
	uint64_t v;
	if (args_uint(d, args, "id", true, 1, UINT32_MAX, &v, e) < 0 ||
	    args_bytes(d, args, "a", answer, e) < 0)
		return -EINVAL;
	if (d->items[*answer].len < 12 || d->items[*answer].len > SM_EG_DNS_ANSWER_MAX) {
		return sm_err_set(e, EINVAL, "EINVAL", "a: 12..%u bytes", (unsigned)SM_EG_DNS_ANSWER_MAX);
	}
	*id = (uint32_t)v;
	return 0;
}

/* ---- args checks of the ops table (ops.h): 0 or -errno with e filled ---- */

static int chk_exec(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	struct exec_args ea;
	return args_exec(d, args, false, &ea, e);
}

static int chk_spawn(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	struct exec_args ea;
	return args_exec(d, args, true, &ea, e);
}

static int chk_pid(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	uint64_t v;
	return args_uint(d, args, "pid", true, 1, INT32_MAX, &v, e) < 0 ? -EINVAL : 0;
}

static int chk_signum(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	uint64_t v;
	return args_uint(d, args, "signum", true, 1, 64, &v, e) < 0 ? -EINVAL : 0;
}

static int chk_signal(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	return chk_pid(d, args, e) < 0 || chk_signum(d, args, e) < 0 ? -EINVAL : 0;
}

static int chk_resize(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	uint64_t v;
	return chk_pid(d, args, e) < 0 ||
			       args_uint(d, args, "cols", true, 1, 65535, &v, e) < 0 ||
			       args_uint(d, args, "rows", true, 1, 65535, &v, e) < 0
		       ? -EINVAL
		       : 0;
}

static int chk_write_file(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	uint64_t v;
	int idx;
	bool b;
	if (args_path(d, args, "path", &idx, e) < 0 || args_bytes(d, args, "data", &idx, e) < 0 ||
	    args_uint(d, args, "mode", false, 0, UINT32_MAX, &v, e) < 0 ||
	    args_bool(d, args, "mkdirs", true, &b, e) < 0)
		return -EINVAL;
	if (d->items[idx].len > SM_MAX_FILE_BYTES) {
		return sm_err_set(e, EFBIG, "SM_FILE_TOO_LARGE", "data: larger than 4194304 bytes");
	}
	return 0;
}

static int chk_read_file(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	int idx;
	return args_path(d, args, "path", &idx, e);
}

static int chk_dial_answer(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	uint32_t a, c;
	int idx;
	return args_dial_answer(d, args, &a, &c, &idx, e);
}

static int chk_dns_answer(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	uint32_t a;
	int idx;
	return args_dns_answer(d, args, &a, &idx, e);
}

static int chk_tcp_connect(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	uint64_t v;
	return args_uint(d, args, "port", true, 1, 65535, &v, e) < 0 ||
			       args_uint(d, args, "ch", true, 1, UINT32_MAX, &v, e) < 0
		       ? -EINVAL
		       : 0;
}

static int chk_resume(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	uint64_t v;
	int idx;
	if (args_uint(d, args, "timeNs", true, 0, UINT64_MAX, &v, e) < 0 ||
	    args_bytes(d, args, "entropy", &idx, e) < 0)
		return -EINVAL;
	if (d->items[idx].len < SM_ENTROPY_MIN || d->items[idx].len > SM_ENTROPY_MAX)
		return einval(e, "entropy", "must be 32..512 bytes");
	return 0;
}

static int chk_fs_attach(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	char tag[FS_TAG_MAX + 1];
	uint32_t ch;
	int idx;
	return args_fs_attach(d, args, tag, &ch, &idx, e);
}

static int chk_fs_detach(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	char tag[FS_TAG_MAX + 1];
	return args_tag(d, args, "tag", tag, e);
}

static int chk_none(const struct cb_doc *d, uint32_t args, struct sm_err *e)
{
	(void)d, (void)args, (void)e;
	return 0;
}

typedef int args_check_fn(const struct cb_doc *d, uint32_t args, struct sm_err *e);

/* the op names of the protocol, from the ops table; capability rows that are no op have no check */
static const struct {
	const char *name;
	args_check_fn *check;
} op_checks[] = {
#define SM_OP_CHECK(name, handler, check, need) {name, check},
	SM_OPS(SM_OP_CHECK)
#undef SM_OP_CHECK
};

int args_check_op(const struct cb_doc *d, uint32_t op, uint32_t args, struct sm_err *e)
{
	for (size_t i = 0; i < sizeof(op_checks) / sizeof(op_checks[0]); i++)
		if (op_checks[i].check && cb_text_eq(d, op, op_checks[i].name))
			return op_checks[i].check(d, args, e);
	sm_err_fmt(e, "SM_UNKNOWN_OP", "%s", "");
	return 1;
}
