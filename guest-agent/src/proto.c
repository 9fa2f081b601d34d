#include "proto.h"
#include "fuse.h"
#include "ops.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int bad(const char **code, const char *c, char *msg, size_t msglen, const char *what,
	       const char *field)
{
	*code = c;
	snprintf(msg, msglen, "%s%s%s", field ? field : "", field ? ": " : "", what);
	return -1;
}

static int get_u(const struct cb_doc *d, uint32_t map, const char *key, bool required, uint64_t max,
		 uint64_t *out, const char **code, char *msg, size_t msglen)
{
	int i = cb_map_get(d, map, key);
	if (i < 0) {
		if (required)
			return bad(code, E_BAD_FRAME, msg, msglen, "missing", key);
		return 0;
	}
	if (d->items[i].type != CB_UINT || d->items[i].u > max)
		return bad(code, E_BAD_FRAME, msg, msglen, "must be an unsigned integer in range", key);
	*out = d->items[i].u;
	return 1;
}

static int get_t(const struct cb_doc *d, uint32_t map, const char *key, bool required, uint32_t max,
		 int *out, const char **code, char *msg, size_t msglen)
{
	int i = cb_map_get(d, map, key);
	if (i < 0) {
		if (required)
			return bad(code, E_BAD_FRAME, msg, msglen, "missing", key);
		return 0;
	}
	if (d->items[i].type != CB_TEXT || d->items[i].len > max)
		return bad(code, E_BAD_FRAME, msg, msglen, "must be a text of limited length", key);
	*out = i;
	return 1;
}

int proto_frame_len(const uint8_t *p, size_t avail, uint32_t max_frame, size_t *total, const char **code)
{
	if (avail < 4)
		return 0;
	uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	if (n == 0) {
		*code = E_FRAME_EMPTY;
		return -1;
	}
	if (n > max_frame) {
		*code = E_FRAME_TOO_LARGE;
		return -1;
	}
	if (avail - 4 < n)
		return 0;
	*total = 4 + (size_t)n;
	return 1;
}

int proto_check_frame(struct cb_doc *doc, const uint8_t *body, size_t len, struct cb_item *items,
		      uint32_t cap, uint32_t max_data, struct frame_info *fi, const char **code, char *msg,
		      size_t msglen)
{
	const char *derr = NULL;
	memset(fi, 0, sizeof(*fi));
	if (len == 0)
		return bad(code, E_FRAME_EMPTY, msg, msglen, "empty frame", NULL);
	if (cb_decode(doc, body, len, items, cap, &derr) < 0)
		return bad(code, E_BAD_CBOR, msg, msglen, derr, NULL);
	if (doc->items[0].type != CB_MAP)
		return bad(code, E_BAD_FRAME, msg, msglen, "frame is not a map", NULL);
	int t = cb_map_get(doc, 0, "t");
	if (t < 0 || doc->items[t].type != CB_TEXT)
		return bad(code, E_BAD_FRAME, msg, msglen, "missing or non-text frame type", "t");
	uint32_t tt = (uint32_t)t;
	uint64_t v = 0;
	int idx;
	if (cb_text_eq(doc, tt, "hello")) {
		fi->kind = FK_HELLO;
		if (get_u(doc, 0, "v", true, UINT64_MAX, &fi->v, code, msg, msglen) < 0 ||
		    get_t(doc, 0, "host", true, 256, &idx, code, msg, msglen) < 0 ||
		    get_u(doc, 0, "maxFrame", true, UINT64_MAX, &fi->max_frame, code, msg, msglen) < 0 ||
		    get_u(doc, 0, "window", true, UINT64_MAX, &fi->window, code, msg, msglen) < 0)
			return -1;
		int r = get_u(doc, 0, "nonce", false, UINT32_MAX, &v, code, msg, msglen);
		if (r < 0) {
			/* nonce: null is the same as absent */
			int ni = cb_map_get(doc, 0, "nonce");
			if (doc->items[ni].type != CB_NULL)
				return -1;
			r = 0;
		}
		fi->has_nonce = r > 0;
		fi->nonce = (uint32_t)v;
		if (fi->max_frame < SM_MIN_FRAME_BYTES)
			return bad(code, E_BAD_FRAME, msg, msglen, "below 1048576", "maxFrame");
		if (fi->max_frame > SM_MAX_FRAME_BYTES)
			fi->max_frame = SM_MAX_FRAME_BYTES;
		if (fi->window < SM_MIN_WINDOW_BYTES || fi->window > SM_MAX_WINDOW_BYTES)
			return bad(code, E_BAD_FRAME, msg, msglen, "out of range", "window");
		return 0;
	}
	if (cb_text_eq(doc, tt, "req")) {
		fi->kind = FK_REQ;
		int op, args;
		if (get_u(doc, 0, "id", true, UINT32_MAX, &v, code, msg, msglen) < 0 ||
		    get_t(doc, 0, "op", true, 64, &op, code, msg, msglen) < 0)
			return -1;
		fi->id = (uint32_t)v;
		fi->op = (uint32_t)op;
		args = cb_map_get(doc, 0, "args");
		if (args < 0 || doc->items[args].type != CB_MAP)
			return bad(code, E_BAD_FRAME, msg, msglen, "missing or not a map", "args");
		fi->args = (uint32_t)args;
		return 0;
	}
	bool is_data = cb_text_eq(doc, tt, "data"), is_credit = cb_text_eq(doc, tt, "credit");
	bool is_eof = cb_text_eq(doc, tt, "eof"), is_close = cb_text_eq(doc, tt, "close");
	if (is_data || is_credit || is_eof || is_close) {
		fi->kind = is_data ? FK_DATA : is_credit ? FK_CREDIT : is_eof ? FK_EOF : FK_CLOSE;
		if (get_u(doc, 0, "ch", true, UINT32_MAX, &v, code, msg, msglen) < 0)
			return -1;
		if (v == 0)
			return bad(code, E_BAD_FRAME, msg, msglen, "channel id 0", "ch");
		fi->ch = (uint32_t)v;
		if (is_data) {
			int di = cb_map_get(doc, 0, "d");
			if (di < 0 || doc->items[di].type != CB_BYTES)
				return bad(code, E_BAD_FRAME, msg, msglen, "missing or not bytes", "d");
			if (doc->items[di].len == 0 || doc->items[di].len > max_data)
				return bad(code, E_BAD_FRAME, msg, msglen, "length out of range", "d");
			fi->d = (uint32_t)di;
		}
		if (is_credit) {
			if (get_u(doc, 0, "n", true, UINT64_MAX, &fi->n, code, msg, msglen) < 0)
				return -1;
			if (fi->n == 0)
				return bad(code, E_BAD_FRAME, msg, msglen, "must be >= 1", "n");
		}
		return 0;
	}
	if (cb_text_eq(doc, tt, "fatal")) {
		fi->kind = FK_FATAL;
		if (get_t(doc, 0, "code", true, 64, &idx, code, msg, msglen) < 0 ||
		    get_t(doc, 0, "message", true, 4096, &idx, code, msg, msglen) < 0)
			return -1;
		return 0;
	}
	char tn[80];
	size_t n = doc->items[tt].len < 64 ? doc->items[tt].len : 64;
	memcpy(tn, cb_ptr(doc, tt), n);
	tn[n] = 0;
	*code = E_UNKNOWN_FRAME;
	snprintf(msg, msglen, "frame type \"%s\" not accepted by the agent", tn);
	return -1;
}

/* ---- request arguments (errors are EINVAL responses, not violations) ---- */

static int einval(char *msg, size_t msglen, const char *field, const char *what)
{
	snprintf(msg, msglen, "%s: %s", field, what);
	return -1;
}

int args_uint(const struct cb_doc *d, uint32_t map, const char *key, bool required, uint64_t min,
	      uint64_t max, uint64_t *out, char *msg, size_t msglen)
{
	int i = cb_map_get(d, map, key);
	if (i < 0 || d->items[i].type == CB_NULL) {
		if (required)
			return einval(msg, msglen, key, "required");
		return 0;
	}
	if (d->items[i].type != CB_UINT)
		return einval(msg, msglen, key, "must be an unsigned integer");
	if (d->items[i].u < min || d->items[i].u > max)
		return einval(msg, msglen, key, "out of range");
	*out = d->items[i].u;
	return 1;
}

int args_bool(const struct cb_doc *d, uint32_t map, const char *key, bool def, bool *out, char *msg,
	      size_t msglen)
{
	int i = cb_map_get(d, map, key);
	*out = def;
	if (i < 0 || d->items[i].type == CB_NULL)
		return 0;
	if (d->items[i].type != CB_TRUE && d->items[i].type != CB_FALSE)
		return einval(msg, msglen, key, "must be a boolean");
	*out = d->items[i].type == CB_TRUE;
	return 1;
}

static bool text_ok(const struct cb_doc *d, uint32_t i, uint32_t max)
{
	return d->items[i].type == CB_TEXT && d->items[i].len <= max &&
	       !memchr(cb_ptr(d, i), 0, d->items[i].len);
}

static int check_path_item(const struct cb_doc *d, uint32_t i, const char *key, char *msg,
			   size_t msglen)
{
	if (!text_ok(d, i, SM_PATH_MAX_BYTES) || d->items[i].len == 0 || cb_ptr(d, i)[0] != '/')
		return einval(msg, msglen, key, "must be an absolute path without NUL, <= 4096 bytes");
	return 0;
}

int args_path(const struct cb_doc *d, uint32_t map, const char *key, int *out, char *msg, size_t msglen)
{
	int i = cb_map_get(d, map, key);
	if (i < 0 || d->items[i].type == CB_NULL)
		return einval(msg, msglen, key, "required");
	if (check_path_item(d, (uint32_t)i, key, msg, msglen) < 0)
		return -1;
	*out = i;
	return 0;
}

int args_bytes(const struct cb_doc *d, uint32_t map, const char *key, int *out, char *msg, size_t msglen)
{
	int i = cb_map_get(d, map, key);
	if (i < 0 || d->items[i].type == CB_NULL)
		return einval(msg, msglen, key, "required");
	if (d->items[i].type != CB_BYTES)
		return einval(msg, msglen, key, "must be bytes");
	*out = i;
	return 0;
}

static int args_cmd(const struct cb_doc *d, uint32_t map, const char *prefix, struct cmd_args *c,
		    char *msg, size_t msglen)
{
	char f[32];
	c->env = c->cwd = c->user = -1;
	int a = cb_map_get(d, map, "argv");
	snprintf(f, sizeof(f), "%sargv", prefix);
	if (a < 0 || d->items[a].type != CB_ARRAY)
		return einval(msg, msglen, f, "required array of text");
	if (d->items[a].count < 1 || d->items[a].count > SM_ARGV_MAX)
		return einval(msg, msglen, f, "must have 1..4096 entries");
	uint32_t k = (uint32_t)a + 1;
	for (uint32_t i = 0; i < d->items[a].count; i++) {
		if (!text_ok(d, k, SM_ARG_BYTES_MAX))
			return einval(msg, msglen, f, "entries must be text without NUL, <= 131072 bytes");
		k = d->items[k].next;
	}
	if (d->items[(uint32_t)a + 1].len == 0)
		return einval(msg, msglen, f, "argv[0] is empty");
	c->argv = a;
	int e = cb_map_get(d, map, "env");
	snprintf(f, sizeof(f), "%senv", prefix);
	if (e >= 0 && d->items[e].type != CB_NULL) {
		if (d->items[e].type != CB_MAP)
			return einval(msg, msglen, f, "must be a map text->text");
		if (d->items[e].count > SM_ENV_MAX)
			return einval(msg, msglen, f, "more than 4096 entries");
		k = (uint32_t)e + 1;
		for (uint32_t i = 0; i < d->items[e].count; i++) {
			uint32_t val = d->items[k].next;
			if (!text_ok(d, k, SM_ARG_BYTES_MAX) || d->items[k].len == 0 ||
			    memchr(cb_ptr(d, k), '=', d->items[k].len))
				return einval(msg, msglen, f, "keys must be non-empty text without '=' or NUL");
			if (!text_ok(d, val, SM_ARG_BYTES_MAX))
				return einval(msg, msglen, f, "values must be text without NUL");
			k = d->items[val].next;
		}
		c->env = e;
	}
	int w = cb_map_get(d, map, "cwd");
	snprintf(f, sizeof(f), "%scwd", prefix);
	if (w >= 0 && d->items[w].type != CB_NULL) {
		if (check_path_item(d, (uint32_t)w, f, msg, msglen) < 0)
			return -1;
		c->cwd = w;
	}
	int u = cb_map_get(d, map, "user");
	snprintf(f, sizeof(f), "%suser", prefix);
	if (u >= 0 && d->items[u].type != CB_NULL) {
		if (!text_ok(d, (uint32_t)u, 255) || d->items[u].len == 0)
			return einval(msg, msglen, f, "must be a non-empty text without NUL, <= 255 bytes");
		c->user = u;
	}
	return 0;
}

int args_exec(const struct cb_doc *d, uint32_t args, bool spawn, struct exec_args *a, const char **code,
	      char *msg, size_t msglen)
{
	uint64_t v;
	(void)code;
	memset(a, 0, sizeof(*a));
	a->stage = a->chain = -1;
	a->cols = 80;
	a->rows = 24;
	if (args_cmd(d, args, "", &a->cmd, msg, msglen) < 0)
		return -1;
	int s = cb_map_get(d, args, "stage");
	if (s >= 0 && d->items[s].type != CB_NULL) {
		if (d->items[s].type != CB_ARRAY || d->items[s].count > SM_STAGE_MAX)
			return einval(msg, msglen, "stage", "must be an array of <= 1024 entries");
		uint32_t k = (uint32_t)s + 1;
		for (uint32_t i = 0; i < d->items[s].count; i++) {
			int p, dd;
			if (d->items[k].type != CB_MAP)
				return einval(msg, msglen, "stage", "entries must be maps");
			if (args_path(d, k, "path", &p, msg, msglen) < 0 ||
			    args_bytes(d, k, "data", &dd, msg, msglen) < 0 ||
			    args_uint(d, k, "mode", false, 0, UINT32_MAX, &v, msg, msglen) < 0)
				return -1;
			if (d->items[dd].len > SM_MAX_FILE_BYTES) {
				if (code)
					*code = "SM_FILE_TOO_LARGE";
				return einval(msg, msglen, "stage.data", "larger than 4194304 bytes");
			}
			k = d->items[k].next;
		}
		a->stage = s;
	}
	if (!spawn && args_uint(d, args, "timeoutMs", false, 0, UINT64_MAX, &a->timeout_ms, msg, msglen) < 0)
		return -1;
	int c = cb_map_get(d, args, "chain");
	if (c >= 0 && d->items[c].type != CB_NULL) {
		if (d->items[c].type != CB_MAP)
			return einval(msg, msglen, "chain", "must be a map or null");
		if (args_cmd(d, (uint32_t)c, "chain.", &a->chain_cmd, msg, msglen) < 0)
			return -1;
		a->chain = c;
	}
	if (args_bool(d, args, "tty", false, &a->tty, msg, msglen) < 0)
		return -1;
	v = 80;
	if (args_uint(d, args, "cols", false, 1, 65535, &v, msg, msglen) < 0)
		return -1;
	a->cols = (uint16_t)v;
	v = 24;
	if (args_uint(d, args, "rows", false, 1, 65535, &v, msg, msglen) < 0)
		return -1;
	a->rows = (uint16_t)v;
	if (args_uint(d, args, "chOut", true, 1, UINT32_MAX, &v, msg, msglen) < 0)
		return -1;
	a->ch_out = (uint32_t)v;
	int r = args_uint(d, args, "chErr", !a->tty, 1, UINT32_MAX, &v, msg, msglen);
	if (r < 0)
		return -1;
	a->has_ch_err = r > 0 && !a->tty;
	a->ch_err = a->has_ch_err ? (uint32_t)v : 0;
	if (spawn) {
		if (args_uint(d, args, "chIn", true, 1, UINT32_MAX, &v, msg, msglen) < 0)
			return -1;
		a->ch_in = (uint32_t)v;
	}
	if ((a->has_ch_err && a->ch_err == a->ch_out) ||
	    (spawn && (a->ch_in == a->ch_out || (a->has_ch_err && a->ch_in == a->ch_err))))
		return einval(msg, msglen, "chOut", "channel ids of one request must be distinct");
	return 0;
}

int args_tag(const struct cb_doc *d, uint32_t map, const char *key, char *out, char *msg, size_t msglen)
{
	int i = cb_map_get(d, map, key);
	if (i < 0 || d->items[i].type == CB_NULL)
		return einval(msg, msglen, key, "required");
	if (d->items[i].type != CB_TEXT ||
	    !fs_tag_valid((const char *)cb_ptr(d, (uint32_t)i), d->items[i].len))
		return einval(msg, msglen, key, "must be 1..35 bytes of [A-Za-z0-9._-], not \".\" or \"..\"");
	memcpy(out, cb_ptr(d, (uint32_t)i), d->items[i].len);
	out[d->items[i].len] = 0;
	return 0;
}

int args_fs_attach(const struct cb_doc *d, uint32_t args, char *tag, uint32_t *ch, int *path, char *msg,
		   size_t msglen)
{
	uint64_t v;
	if (args_tag(d, args, "tag", tag, msg, msglen) < 0 ||
	    args_uint(d, args, "ch", true, 1, UINT32_MAX, &v, msg, msglen) < 0)
		return -1;
	*ch = (uint32_t)v;
	*path = -1;
	int p = cb_map_get(d, args, "path");
	if (p >= 0 && d->items[p].type != CB_NULL) {
		if (args_path(d, args, "path", path, msg, msglen) < 0)
			return -1;
	}
	return 0;
}

int args_dial_answer(const struct cb_doc *d, uint32_t args, uint32_t *id, uint32_t *ch, int *error, char *msg,
		     size_t msglen)
{
	uint64_t v, c = 0;
	if (args_uint(d, args, "id", true, 1, UINT32_MAX, &v, msg, msglen) < 0 ||
	    args_uint(d, args, "ch", false, 1, UINT32_MAX, &c, msg, msglen) < 0)
		return -1;
	int e = cb_map_get(d, args, "error");
	if (e >= 0 && d->items[e].type == CB_NULL)
		e = -1;
	if (e >= 0 && (d->items[e].type != CB_TEXT || d->items[e].len < 1 || d->items[e].len > 64)) {
		snprintf(msg, msglen, "error: must be text (1..64 bytes)");
		return -1;
	}
	if ((e >= 0) == (c != 0)) {
		snprintf(msg, msglen, "ch: exactly one of ch and error is required");
		return -1;
	}
	*id = (uint32_t)v;
	*ch = (uint32_t)c;
	*error = e;
	return 0;
}

int args_dns_answer(const struct cb_doc *d, uint32_t args, uint32_t *id, int *answer, char *msg, size_t msglen)
{
	uint64_t v;
	if (args_uint(d, args, "id", true, 1, UINT32_MAX, &v, msg, msglen) < 0 ||
	    args_bytes(d, args, "a", answer, msg, msglen) < 0)
		return -1;
	if (d->items[*answer].len < 12 || d->items[*answer].len > SM_EG_DNS_ANSWER_MAX) {
		snprintf(msg, msglen, "a: 12..%u bytes", (unsigned)SM_EG_DNS_ANSWER_MAX);
		return -1;
	}
	*id = (uint32_t)v;
	return 0;
}

/* ---- args checks of the ops table (ops.h): 0, or -1 with *code (preset to EINVAL) and msg ---- */

static int chk_exec(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	struct exec_args ea;
	return args_exec(d, args, false, &ea, code, msg, msglen);
}

static int chk_spawn(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	struct exec_args ea;
	return args_exec(d, args, true, &ea, code, msg, msglen);
}

static int chk_pid(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	(void)code;
	uint64_t v;
	return args_uint(d, args, "pid", true, 1, INT32_MAX, &v, msg, msglen) < 0 ? -1 : 0;
}

static int chk_signum(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	(void)code;
	uint64_t v;
	return args_uint(d, args, "signum", true, 1, 64, &v, msg, msglen) < 0 ? -1 : 0;
}

static int chk_signal(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	return chk_pid(d, args, code, msg, msglen) < 0 || chk_signum(d, args, code, msg, msglen) < 0 ? -1 : 0;
}

static int chk_resize(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	uint64_t v;
	return chk_pid(d, args, code, msg, msglen) < 0 ||
			       args_uint(d, args, "cols", true, 1, 65535, &v, msg, msglen) < 0 ||
			       args_uint(d, args, "rows", true, 1, 65535, &v, msg, msglen) < 0
		       ? -1
		       : 0;
}

static int chk_write_file(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	uint64_t v;
	int idx;
	bool b;
	if (args_path(d, args, "path", &idx, msg, msglen) < 0 || args_bytes(d, args, "data", &idx, msg, msglen) < 0 ||
	    args_uint(d, args, "mode", false, 0, UINT32_MAX, &v, msg, msglen) < 0 ||
	    args_bool(d, args, "mkdirs", true, &b, msg, msglen) < 0)
		return -1;
	if (d->items[idx].len > SM_MAX_FILE_BYTES) {
		*code = "SM_FILE_TOO_LARGE";
		snprintf(msg, msglen, "data: larger than 4194304 bytes");
		return -1;
	}
	return 0;
}

static int chk_read_file(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	(void)code;
	int idx;
	return args_path(d, args, "path", &idx, msg, msglen);
}

static int chk_dial_answer(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	(void)code;
	uint32_t a, c;
	int idx;
	return args_dial_answer(d, args, &a, &c, &idx, msg, msglen);
}

static int chk_dns_answer(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	(void)code;
	uint32_t a;
	int idx;
	return args_dns_answer(d, args, &a, &idx, msg, msglen);
}

static int chk_tcp_connect(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	(void)code;
	uint64_t v;
	return args_uint(d, args, "port", true, 1, 65535, &v, msg, msglen) < 0 ||
			       args_uint(d, args, "ch", true, 1, UINT32_MAX, &v, msg, msglen) < 0
		       ? -1
		       : 0;
}

static int chk_resume(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	(void)code;
	uint64_t v;
	int idx;
	if (args_uint(d, args, "timeNs", true, 0, UINT64_MAX, &v, msg, msglen) < 0 ||
	    args_bytes(d, args, "entropy", &idx, msg, msglen) < 0)
		return -1;
	if (d->items[idx].len < SM_ENTROPY_MIN || d->items[idx].len > SM_ENTROPY_MAX)
		return einval(msg, msglen, "entropy", "must be 32..512 bytes");
	return 0;
}

static int chk_fs_attach(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	(void)code;
	char tag[FS_TAG_MAX + 1];
	uint32_t ch;
	int idx;
	return args_fs_attach(d, args, tag, &ch, &idx, msg, msglen);
}

static int chk_fs_detach(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	(void)code;
	char tag[FS_TAG_MAX + 1];
	return args_tag(d, args, "tag", tag, msg, msglen);
}

static int chk_none(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen)
{
	(void)d, (void)args, (void)code, (void)msg, (void)msglen;
	return 0;
}

typedef int args_check_fn(const struct cb_doc *d, uint32_t args, const char **code, char *msg, size_t msglen);

/* the op names of the protocol, from the ops table; capability rows that are no op have no check */
static const struct {
	const char *name;
	args_check_fn *check;
} op_checks[] = {
#define SM_OP_CHECK(name, handler, check, need) {name, check},
	SM_OPS(SM_OP_CHECK)
#undef SM_OP_CHECK
};

int args_check_op(const struct cb_doc *d, uint32_t op, uint32_t args, const char **code, char *msg,
		  size_t msglen)
{
	*code = "EINVAL";
	for (size_t i = 0; i < sizeof(op_checks) / sizeof(op_checks[0]); i++)
		if (op_checks[i].check && cb_text_eq(d, op, op_checks[i].name))
			return op_checks[i].check(d, args, code, msg, msglen);
	*code = "SM_UNKNOWN_OP";
	return 1;
}
