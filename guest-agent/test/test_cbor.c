/* Unit tests: CBOR codec, framing, frame validation, request arguments, boot
 * config and user resolution. TAP output. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dump.h"
#include "proto.h"
#include "sm.h"
#include "tap.h"

static struct cb_item items[SM_MAX_ITEMS];

static int dec(struct cb_buf *b, struct cb_doc *d, const char **err)
{
	return cb_decode(d, b->p, b->len, items, SM_MAX_ITEMS, err);
}

static char *dump_buf(const uint8_t *p, size_t n)
{
	struct cb_doc d;
	if (cb_decode(&d, p, n, items, SM_MAX_ITEMS, NULL) < 0)
		return NULL;
	struct sbuf sb = {0};
	dump_item(&sb, &d, 0);
	return sb.p;
}

static void test_ints(void)
{
	static const uint64_t vals[] = {0, 1, 23, 24, 255, 256, 65535, 65536, 0xffffffffull, 0x100000000ull, UINT64_MAX};
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		struct cb_buf b;
		cbe_init(&b, 64);
		cbe_uint(&b, vals[i]);
		struct cb_doc d;
		int r = dec(&b, &d, NULL);
		ok(r == 0 && d.items[0].type == CB_UINT && d.items[0].u == vals[i], "uint %llu round-trips in %zu bytes",
		   (unsigned long long)vals[i], b.len);
		cbe_free(&b);
	}
	struct cb_buf b;
	cbe_init(&b, 64);
	cbe_int(&b, -1);
	cbe_int(&b, INT64_MIN);
	struct cb_doc d;
	ok(cb_decode(&d, b.p, 1, items, 8, NULL) == 0 && d.items[0].type == CB_NINT && d.items[0].u == 0, "-1 is 0x20");
	ok(cb_decode(&d, b.p + 1, b.len - 1, items, 8, NULL) == 0 && d.items[0].u == (uint64_t)INT64_MAX,
	   "INT64_MIN decodes");
	cbe_free(&b);
	/* non-preferred widths are accepted (SPEC 2) */
	const uint8_t wide[] = {0x1b, 0, 0, 0, 0, 0, 0, 0, 5};
	ok(cb_decode(&d, wide, sizeof(wide), items, 8, NULL) == 0 && d.items[0].u == 5, "8-byte encoding of 5 accepted");
	const uint8_t nbig[] = {0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0};
	ok(cb_decode(&d, nbig, sizeof(nbig), items, 8, NULL) < 0, "nint below -2^63 rejected");
}

static void test_structures(void)
{
	struct cb_buf b;
	cbe_init(&b, 1 << 20);
	cbe_map(&b, 4);
	cbe_text(&b, "t");
	cbe_text(&b, "req");
	cbe_text(&b, "list");
	cbe_array(&b, 3);
	cbe_bool(&b, true);
	cbe_null(&b);
	cbe_map(&b, 0);
	cbe_text(&b, "bin");
	cbe_bytes(&b, "\x00\x01\xff", 3);
	cbe_text(&b, "empty");
	cbe_array(&b, 0);
	struct cb_doc d;
	const char *err = NULL;
	ok(dec(&b, &d, &err) == 0, "nested structure decodes");
	ok(d.items[0].next == d.n, "root subtree spans every item");
	int l = cb_map_get(&d, 0, "list");
	ok(l > 0 && d.items[l].type == CB_ARRAY && d.items[l].count == 3, "map lookup finds the array");
	int e = cb_map_get(&d, 0, "empty");
	ok(e > 0 && d.items[e].type == CB_ARRAY && d.items[e].count == 0, "empty array after a skipped subtree");
	int bi = cb_map_get(&d, 0, "bin");
	ok(bi > 0 && d.items[bi].len == 3 && !memcmp(cb_ptr(&d, (uint32_t)bi), "\x00\x01\xff", 3), "bytes are zero-copy");
	ok(cb_map_get(&d, 0, "nope") < 0, "missing key");
	char *s = dump_buf(b.p, b.len);
	ok(s && !strcmp(s, "{t62696e:h0001ff,t656d707479:[],t6c697374:[true,null,{}],t74:t726571}"), "dump form %s", s);
	free(s);
	/* every truncation of a valid item is rejected, never read past the end */
	int bad = 0;
	for (size_t n = 0; n < b.len; n++) {
		uint8_t *copy = malloc(n ? n : 1);
		memcpy(copy, b.p, n);
		if (cb_decode(&d, copy, n, items, SM_MAX_ITEMS, NULL) == 0)
			bad++;
		free(copy);
	}
	ok(bad == 0, "all %zu truncations rejected", b.len);
	cbe_free(&b);
}

static void test_limits(void)
{
	struct cb_doc d;
	const char *err;
	/* depth: 16 nested arrays inside the top-level map = level 17 */
	uint8_t deep[64];
	size_t n = 0;
	deep[n++] = 0xa1;
	deep[n++] = 0x61;
	deep[n++] = 'a';
	for (int i = 0; i < 15; i++)
		deep[n++] = 0x81;
	deep[n++] = 0x80;
	ok(cb_decode(&d, deep, n, items, 64, &err) < 0 && strstr(err, "deep"), "level 17 rejected");
	n = 0;
	deep[n++] = 0xa1;
	deep[n++] = 0x61;
	deep[n++] = 'a';
	for (int i = 0; i < 14; i++)
		deep[n++] = 0x81;
	deep[n++] = 0x80;
	ok(cb_decode(&d, deep, n, items, 64, &err) == 0, "level 16 accepted");
	/* huge declared lengths fail before allocation */
	const uint8_t huge[] = {0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	ok(cb_decode(&d, huge, sizeof(huge), items, 8, &err) < 0, "2^64 byte string rejected");
	const uint8_t harr[] = {0x9a, 0x7f, 0xff, 0xff, 0xff, 0x00};
	ok(cb_decode(&d, harr, sizeof(harr), items, 8, &err) < 0, "2^31 element array rejected");
	/* item cap */
	uint8_t many[1 + 2 + 100];
	many[0] = 0x98;
	many[1] = 100;
	memset(many + 2, 0x00, 100);
	ok(cb_decode(&d, many, 102, items, 50, &err) < 0, "item cap enforced");
	ok(cb_decode(&d, many, 102, items, 200, &err) == 0, "100 items fit a 200 cap");
	/* duplicate keys in a large map (sorted path) */
	struct cb_buf b;
	cbe_init(&b, 1 << 20);
	cbe_map(&b, 40);
	char k[16];
	for (int i = 0; i < 40; i++) {
		snprintf(k, sizeof(k), "k%d", i == 39 ? 7 : i);
		cbe_text(&b, k);
		cbe_uint(&b, (uint64_t)i);
	}
	ok(dec(&b, &d, &err) < 0 && strstr(err, "duplicate"), "duplicate among 40 keys found");
	cbe_free(&b);
	cbe_init(&b, 1 << 20);
	cbe_map(&b, 40);
	for (int i = 0; i < 40; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		cbe_text(&b, k);
		cbe_uint(&b, (uint64_t)i);
	}
	ok(dec(&b, &d, &err) == 0, "40 distinct keys accepted");
	cbe_free(&b);
	/* encoder cap is sticky */
	cbe_init(&b, 8);
	cbe_bytes(&b, "0123456789", 10);
	ok(b.err == -EMSGSIZE, "encoder refuses to grow past its cap");
	cbe_free(&b);
	ok(!utf8_valid((const uint8_t *)"\xed\xa0\x80", 3), "surrogate rejected");
	ok(!utf8_valid((const uint8_t *)"\xc0\xaf", 2), "overlong rejected");
	ok(utf8_valid((const uint8_t *)"\xf0\x9f\x98\x80", 4), "4-byte sequence accepted");
}

static int frame_of(struct cb_buf *b, struct frame_info *fi, const char **code, char *msg, struct cb_doc *d)
{
	struct sm_err e = {.code = ""};
	int r = proto_check_frame(d, b->p, b->len, items, SM_MAX_ITEMS, SM_MAX_FRAME_BYTES - 64, fi, &e);
	*code = e.code;
	snprintf(msg, 256, "%.255s", e.msg);
	return r;
}

static void test_frames(void)
{
	struct cb_buf b;
	struct cb_doc d;
	struct frame_info fi;
	const char *code;
	char msg[256];
	size_t total;
	const uint8_t pre[] = {0, 0, 0, 5, 0xa0};
	struct sm_err e;
	ok(proto_frame_len(pre, 3, SM_MAX_FRAME_BYTES, &total, &e) == 0, "short prefix waits");
	ok(proto_frame_len(pre, 5, SM_MAX_FRAME_BYTES, &total, &e) == 0, "partial body waits");
	const uint8_t big[] = {0, 0x50, 0, 1};
	ok(proto_frame_len(big, 4, SM_MAX_FRAME_BYTES, &total, &e) < 0 && !strcmp(e.code, E_FRAME_TOO_LARGE),
	   "5 MiB + 1 rejected from the prefix");

	cbe_init(&b, 4096);
	cbe_map(&b, 5);
	cbe_text(&b, "t");
	cbe_text(&b, "hello");
	cbe_text(&b, "v");
	cbe_uint(&b, 1);
	cbe_text(&b, "host");
	cbe_text(&b, "x");
	cbe_text(&b, "maxFrame");
	cbe_uint(&b, 64u << 20);
	cbe_text(&b, "window");
	cbe_uint(&b, 65536);
	ok(frame_of(&b, &fi, &code, msg, &d) == 0 && fi.kind == FK_HELLO && fi.max_frame == SM_MAX_FRAME_BYTES &&
		   !fi.has_nonce,
	   "hello: maxFrame above 5 MiB is clamped");
	cbe_free(&b);

	cbe_init(&b, 4096);
	cbe_map(&b, 4);
	cbe_text(&b, "t");
	cbe_text(&b, "hello");
	cbe_text(&b, "v");
	cbe_uint(&b, 1);
	cbe_text(&b, "maxFrame");
	cbe_uint(&b, 1000);
	cbe_text(&b, "window");
	cbe_uint(&b, 65536);
	ok(frame_of(&b, &fi, &code, msg, &d) < 0 && !strcmp(code, E_BAD_FRAME), "hello without host / tiny maxFrame");
	cbe_free(&b);

	cbe_init(&b, 4096);
	cbe_map(&b, 3);
	cbe_text(&b, "t");
	cbe_text(&b, "credit");
	cbe_text(&b, "ch");
	cbe_uint(&b, 7);
	cbe_text(&b, "n");
	cbe_uint(&b, 100);
	ok(frame_of(&b, &fi, &code, msg, &d) == 0 && fi.kind == FK_CREDIT && fi.ch == 7 && fi.n == 100, "credit frame");
	cbe_free(&b);

	cbe_init(&b, 4096);
	cbe_map(&b, 2);
	cbe_text(&b, "t");
	cbe_text(&b, "evt");
	cbe_text(&b, "ev");
	cbe_text(&b, "ready");
	ok(frame_of(&b, &fi, &code, msg, &d) < 0 && !strcmp(code, E_UNKNOWN_FRAME), "evt from the host is refused");
	cbe_free(&b);
}

static int req_check(const char *op, void (*fill)(struct cb_buf *), const char **code, char *msg)
{
	static struct cb_buf b;
	struct cb_doc d;
	struct frame_info fi;
	cbe_init(&b, 8u << 20);
	cbe_map(&b, 4);
	cbe_text(&b, "t");
	cbe_text(&b, "req");
	cbe_text(&b, "id");
	cbe_uint(&b, 1);
	cbe_text(&b, "op");
	cbe_text(&b, op);
	cbe_text(&b, "args");
	fill(&b);
	struct sm_err e = {.code = ""};
	int r = proto_check_frame(&d, b.p, b.len, items, SM_MAX_ITEMS, SM_MAX_FRAME_BYTES - 64, &fi, &e);
	if (r == 0)
		r = args_check_op(&d, fi.op, fi.args, &e);
	*code = e.code;
	snprintf(msg, 256, "%.255s", e.msg);
	cbe_free(&b);
	return r;
}

static void exec_ok(struct cb_buf *b)
{
	cbe_map(b, 5);
	cbe_text(b, "argv");
	cbe_array(b, 2);
	cbe_text(b, "echo");
	cbe_text(b, "hi");
	cbe_text(b, "env");
	cbe_map(b, 1);
	cbe_text(b, "A");
	cbe_text(b, "b");
	cbe_text(b, "chOut");
	cbe_uint(b, 1);
	cbe_text(b, "chErr");
	cbe_uint(b, 2);
	cbe_text(b, "timeoutMs");
	cbe_uint(b, 100);
}

static void exec_env_eq(struct cb_buf *b)
{
	cbe_map(b, 4);
	cbe_text(b, "argv");
	cbe_array(b, 1);
	cbe_text(b, "echo");
	cbe_text(b, "env");
	cbe_map(b, 1);
	cbe_text(b, "A=B");
	cbe_text(b, "b");
	cbe_text(b, "chOut");
	cbe_uint(b, 1);
	cbe_text(b, "chErr");
	cbe_uint(b, 2);
}

static void exec_same_ch(struct cb_buf *b)
{
	cbe_map(b, 3);
	cbe_text(b, "argv");
	cbe_array(b, 1);
	cbe_text(b, "echo");
	cbe_text(b, "chOut");
	cbe_uint(b, 1);
	cbe_text(b, "chErr");
	cbe_uint(b, 1);
}

static void exec_tty_no_err(struct cb_buf *b)
{
	cbe_map(b, 5);
	cbe_text(b, "argv");
	cbe_array(b, 1);
	cbe_text(b, "sh");
	cbe_text(b, "tty");
	cbe_bool(b, true);
	cbe_text(b, "cols");
	cbe_uint(b, 100);
	cbe_text(b, "rows");
	cbe_uint(b, 0);
	cbe_text(b, "chOut");
	cbe_uint(b, 1);
}

static void exec_rel_cwd(struct cb_buf *b)
{
	cbe_map(b, 4);
	cbe_text(b, "argv");
	cbe_array(b, 1);
	cbe_text(b, "ls");
	cbe_text(b, "cwd");
	cbe_text(b, "tmp");
	cbe_text(b, "chOut");
	cbe_uint(b, 1);
	cbe_text(b, "chErr");
	cbe_uint(b, 2);
}

static void wf_big(struct cb_buf *b)
{
	static uint8_t data[SM_MAX_FILE_BYTES + 1];
	cbe_map(b, 2);
	cbe_text(b, "path");
	cbe_text(b, "/x");
	cbe_text(b, "data");
	cbe_bytes(b, data, sizeof(data));
}

static void empty_args(struct cb_buf *b) { cbe_map(b, 0); }

static void test_args(void)
{
	const char *code;
	char msg[256];
	ok(req_check("exec", exec_ok, &code, msg) == 0, "exec args valid");
	ok(req_check("exec", exec_env_eq, &code, msg) < 0 && !strcmp(code, "EINVAL") && strstr(msg, "env"),
	   "env key with '=' → EINVAL (%s)", msg);
	ok(req_check("exec", exec_same_ch, &code, msg) < 0 && !strcmp(code, "EINVAL"), "duplicate channel ids → EINVAL");
	ok(req_check("exec", exec_tty_no_err, &code, msg) < 0 && strstr(msg, "rows"), "rows 0 → EINVAL (%s)", msg);
	ok(req_check("exec", exec_rel_cwd, &code, msg) < 0 && strstr(msg, "cwd"), "relative cwd → EINVAL");
	ok(req_check("write-file", wf_big, &code, msg) < 0 && !strcmp(code, "SM_FILE_TOO_LARGE"), "4 MiB + 1 → SM_FILE_TOO_LARGE");
	ok(req_check("ping", empty_args, &code, msg) == 0, "ping with empty args");
	ok(req_check("frobnicate", empty_args, &code, msg) == 1 && !strcmp(code, "SM_UNKNOWN_OP"), "unknown op");
	ok(req_check("resume", empty_args, &code, msg) < 0 && strstr(msg, "timeNs"), "resume needs timeNs");
}

static void test_config(void)
{
	struct cb_buf b;
	struct sm_config c;
	struct sm_err se;
	cbe_init(&b, 4096);
	cbe_map(&b, 8);
	cbe_text(&b, "v");
	cbe_uint(&b, 1);
	cbe_text(&b, "hostname");
	cbe_text(&b, "box");
	cbe_text(&b, "workload");
	cbe_map(&b, 4);
	cbe_text(&b, "argv");
	cbe_array(&b, 2);
	cbe_text(&b, "/bin/sh");
	cbe_text(&b, "-c");
	cbe_text(&b, "env");
	cbe_array(&b, 1);
	cbe_text(&b, "PATH=/bin");
	cbe_text(&b, "cwd");
	cbe_text(&b, "/srv");
	cbe_text(&b, "user");
	cbe_text(&b, "app");
	cbe_text(&b, "startWorkload");
	cbe_text(&b, "resume");
	cbe_text(&b, "guestPort");
	cbe_uint(&b, 80);
	cbe_text(&b, "volumes");
	cbe_array(&b, 1);
	cbe_map(&b, 3);
	cbe_text(&b, "device");
	cbe_text(&b, "/dev/vdb");
	cbe_text(&b, "path");
	cbe_text(&b, "/data");
	cbe_text(&b, "format");
	cbe_bool(&b, true);
	cbe_text(&b, "network");
	cbe_null(&b);
	cbe_text(&b, "futureKey");
	cbe_uint(&b, 1);
	int r = config_parse(b.p, b.len, &c, &se);
	ok(r == 0, "config parses (%s)", r ? se.msg : "ok");
	ok(r == 0 && !strcmp(c.hostname, "box") && c.has_workload && !strcmp(c.wl_argv[1], "-c") && !c.wl_argv[2] &&
		   !strcmp(c.wl_env[0], "PATH=/bin") && c.start == START_RESUME && c.guest_port == 80 && c.nvolumes == 1 &&
		   c.volumes[0].format && !c.has_net && !strcmp(c.wl_user, "app") && c.tmpfs_mib == 0,
	   "config fields");
	if (r == 0)
		config_free(&c);
	cbe_free(&b);
	cbe_init(&b, 64);
	cbe_map(&b, 1);
	cbe_text(&b, "v");
	cbe_uint(&b, 2);
	ok(config_parse(b.p, b.len, &c, &se) < 0 && strstr(se.msg, "config: v"), "v 2 rejected: %s", se.msg);
	cbe_free(&b);
	cbe_init(&b, 64);
	cbe_map(&b, 2);
	cbe_text(&b, "v");
	cbe_uint(&b, 1);
	cbe_text(&b, "startWorkload");
	cbe_text(&b, "later");
	ok(config_parse(b.p, b.len, &c, &se) < 0 && strstr(se.msg, "startWorkload"), "bad startWorkload: %s", se.msg);
	cbe_free(&b);
	cbe_init(&b, 64);
	cbe_map(&b, 1);
	cbe_text(&b, "v");
	cbe_uint(&b, 1);
	ok(config_parse(b.p, b.len, &c, &se) == 0 && c.start == START_BOOT && !c.has_workload &&
		   !strcmp(c.root_device, "/dev/vda"),
	   "defaults");
	cbe_free(&b);
}

static void test_users(void)
{
	char dir[] = "/tmp/sm-agent-users-XXXXXX";
	if (!mkdtemp(dir)) {
		skip("mkdtemp failed");
		return;
	}
	char p[128];
	snprintf(p, sizeof(p), "%s/etc", dir);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/etc/passwd", dir);
	FILE *f = fopen(p, "w");
	fputs("root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1000:App:/home/app:/bin/sh\nbroken-line\n", f);
	fclose(f);
	snprintf(p, sizeof(p), "%s/etc/group", dir);
	f = fopen(p, "w");
	fputs("root:x:0:\nwheel:x:10:root,app\napp:x:1000:\ndocker:x:999:app\nstaff:x:50:\n", f);
	fclose(f);
	struct sm_user u;
	struct sm_err se;
	ok(resolve_user(dir, "app", &u, &se) == 0 && u.uid == 1000 && u.gid == 1000 && u.ngroups == 3 &&
		   !strcmp(u.home, "/home/app"),
	   "name → uid/gid, supplementary groups (%d)", u.ngroups);
	ok(resolve_user(dir, "1000:50", &u, &se) == 0 && u.uid == 1000 && u.gid == 50 && u.ngroups == 1,
	   "uid:gid numeric, no supplementary groups");
	ok(resolve_user(dir, "app:staff", &u, &se) == 0 && u.gid == 50, "name:groupname");
	ok(resolve_user(dir, "4242", &u, &se) == 0 && u.uid == 4242 && u.gid == 0, "unknown numeric uid → gid 0");
	ok(resolve_user(dir, "ghost", &u, &se) < 0 && strstr(se.msg, "ghost"), "unknown name: %s", se.msg);
	ok(resolve_user(dir, "app:nogroup", &u, &se) < 0, "unknown group");
	ok(resolve_user(dir, "", &u, &se) == 0 && u.uid == 0 && u.gid == 0, "empty = root");
	snprintf(p, sizeof(p), "rm -rf %s", dir);
	if (system(p) != 0)
		printf("# cleanup failed\n");
}

int main(void)
{
	test_ints();
	test_structures();
	test_limits();
	test_frames();
	test_args();
	test_config();
	test_users();
	return tap_done();
}
