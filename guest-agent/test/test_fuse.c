/* Unit tests of the share relay logic (src/fuse.c, SPEC 6.4): request parsing, the
 * outstanding-unique set, reply assembly/filtering with the INIT max_write clamp, and
 * the mountinfo parser used by fs-detach and mount.smfs. */
#include <stdlib.h>
#include <string.h>

#include "fuse.h"
#include "sharebinds.h"
#include "tap.h"

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}
static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* what the relay wrote to "/dev/fuse" */
static uint8_t outbuf[1 << 20];
static size_t outlen;
static int nmsgs;
static void emit(void *ctx, const uint8_t *m, uint32_t len)
{
	(void)ctx;
	memcpy(outbuf + outlen, m, len);
	outlen += len;
	nmsgs++;
}
static void reset_out(void) { outlen = 0, nmsgs = 0; }

static size_t reply(uint8_t *p, uint32_t len, int32_t error, uint64_t unique, uint8_t fill)
{
	memset(p, fill, len);
	put32(p, len);
	put32(p + 4, (uint32_t)error);
	put64(p + 8, unique);
	return len;
}

int main(void)
{
	/* tags */
	ok(fs_tag_valid("work", 4) && fs_tag_valid("A-z_0.9", 7), "plain tags are valid");
	ok(fs_tag_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 35), "35 bytes is valid");
	ok(!fs_tag_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 36), "36 bytes is not");
	ok(!fs_tag_valid("", 0) && !fs_tag_valid(".", 1) && !fs_tag_valid("..", 2), "empty, . and .. are not");
	ok(!fs_tag_valid("a/b", 3) && !fs_tag_valid("a b", 3) && !fs_tag_valid("a\0b", 3) &&
	       !fs_tag_valid("\xc3\xa9", 2),
	   "slash, space, NUL, non-ASCII are not");
	ok(fs_tag_valid("...", 3), "'...' is a name, not a path step");

	/* request parsing */
	uint8_t rq[64] = {0};
	uint32_t op;
	uint64_t uq;
	put32(rq, 48);
	put32(rq + 4, 3);
	put64(rq + 8, 0x1122334455667788ull);
	ok(fs_req_parse(rq, 48, &op, &uq) == 0 && op == 3 && uq == 0x1122334455667788ull, "request header parsed");
	ok(fs_req_parse(rq, 47, &op, &uq) < 0, "len must equal the bytes read");
	put32(rq, 20);
	ok(fs_req_parse(rq, 20, &op, &uq) < 0, "shorter than fuse_in_header is rejected");
	ok(!fs_req_needs_reply(2) && !fs_req_needs_reply(42) && !fs_req_needs_reply(36) && fs_req_needs_reply(26) &&
	       fs_req_needs_reply(1),
	   "FORGET, BATCH_FORGET, INTERRUPT get no reply; INIT and LOOKUP do");

	/* outstanding set */
	static struct fs_relay r;
	uint8_t *rbuf = malloc(FS_REPLY_MAX);
	fs_relay_init(&r, rbuf);
	ok(fs_relay_track(&r, 2, 99) == 0 && r.nuniq == 0, "FORGET is not tracked");
	for (uint64_t u = 1; u <= FS_MAX_OUTSTANDING; u++)
		fs_relay_track(&r, 1, u * 2);
	ok(fs_relay_full(&r) && fs_relay_track(&r, 1, 9999) < 0, "256 outstanding: full, the 257th is refused");
	ok(fs_relay_untrack(&r, 20) && !fs_relay_untrack(&r, 20) && !fs_relay_full(&r), "untrack frees a slot once");

	/* reply assembly */
	fs_relay_init(&r, rbuf);
	fs_relay_track(&r, 1, 7);
	fs_relay_track(&r, 1, 8);
	uint8_t in[4096];
	size_t n = reply(in, 100, 0, 7, 0xab);
	n += reply(in + n, 16, -2, 8, 0);
	reset_out();
	for (size_t i = 0; i < n; i++) /* byte by byte */
		if (fs_relay_feed(&r, in + i, 1, emit, NULL) < 0)
			break;
	ok(nmsgs == 2 && outlen == 116 && !memcmp(outbuf, in, 116), "two replies fed byte by byte come out whole");
	ok(r.nuniq == 0, "both uniques are settled");
	reset_out();
	n = reply(in, 40, 0, 7, 1);
	ok(fs_relay_feed(&r, in, n, emit, NULL) == 0 && nmsgs == 0 && r.dropped == 1,
	   "a reply to a unique that is not outstanding is dropped");
	n = reply(in, 32, 0, 0, 2);
	ok(fs_relay_feed(&r, in, n, emit, NULL) == 0 && nmsgs == 1, "a notification (unique 0) passes");

	/* INIT clamp */
	fs_relay_init(&r, rbuf);
	fs_relay_track(&r, 26, 1);
	n = reply(in, 16 + 64, 0, 1, 0);
	put32(in + FS_INIT_MAX_WRITE_OFF, 1u << 20);
	reset_out();
	fs_relay_feed(&r, in, 50, emit, NULL);
	fs_relay_feed(&r, in + 50, n - 50, emit, NULL);
	ok(nmsgs == 1 && get32(outbuf + FS_INIT_MAX_WRITE_OFF) == FS_MAX_WRITE,
	   "INIT reply max_write 1 MiB is clamped to 131072");
	fs_relay_track(&r, 26, 3);
	n = reply(in, 16 + 64, 0, 3, 0);
	put32(in + FS_INIT_MAX_WRITE_OFF, 65536);
	reset_out();
	fs_relay_feed(&r, in, n, emit, NULL);
	ok(get32(outbuf + FS_INIT_MAX_WRITE_OFF) == 65536, "a smaller max_write is kept");
	fs_relay_track(&r, 1, 5);
	n = reply(in, 16 + 64, 0, 5, 0);
	put32(in + FS_INIT_MAX_WRITE_OFF, 1u << 20);
	reset_out();
	fs_relay_feed(&r, in, n, emit, NULL);
	ok(get32(outbuf + FS_INIT_MAX_WRITE_OFF) == 1u << 20, "replies to other opcodes are not touched");

	/* hostile lengths */
	fs_relay_init(&r, rbuf);
	n = reply(in, 16, 0, 1, 0);
	put32(in, 15);
	ok(fs_relay_feed(&r, in, n, emit, NULL) < 0, "len 15 is a protocol error");
	fs_relay_init(&r, rbuf);
	put32(in, FS_REPLY_MAX + 1);
	ok(fs_relay_feed(&r, in, 4, emit, NULL) < 0, "len above FS_REPLY_MAX is refused before buffering");
	fs_relay_init(&r, rbuf);
	fs_relay_track(&r, 1, 9);
	uint8_t *big = calloc(1, FS_REPLY_MAX);
	reply(big, FS_REPLY_MAX, 0, 9, 0x5a);
	reset_out();
	ok(fs_relay_feed(&r, big, FS_REPLY_MAX, emit, NULL) == 0 && nmsgs == 1 && outlen == FS_REPLY_MAX,
	   "a reply of exactly FS_REPLY_MAX passes");
	free(big);

	/* EIO reply */
	uint8_t h[FS_OUT_HDR];
	fs_err_reply(h, 0x0102030405060708ull, 5);
	ok(get32(h) == 16 && (int32_t)get32(h + 4) == -5 && get32(h + 8) == 0x05060708 && get32(h + 12) == 0x01020304,
	   "EIO reply header: len 16, error -5, unique");

	/* mountinfo */
	char line[] = "41 30 0:37 / /my\\040work rw,nosuid,nodev shared:7 master:2 - fuse.smfs t1 rw,user_id=0\n";
	char *mp, *type, *src;
	ok(fs_mountinfo_parse(line, &mp, &type, &src) == 0 && !strcmp(mp, "/my work") && !strcmp(type, "fuse.smfs") &&
	       !strcmp(src, "t1"),
	   "mountinfo line with optional fields and an escaped space");
	char bad[] = "41 30 0:37 / /x rw shared:7\n";
	ok(fs_mountinfo_parse(bad, &mp, &type, &src) < 0, "a line without the separator is rejected");

	/* mount helper: names and command lines as busybox and util-linux mount(8) pass them */
	ok(fs_is_helper_name("mount.virtiofs") && fs_is_helper_name("mount.smfs") && !fs_is_helper_name("mount.fuse") &&
	       !fs_is_helper_name("mount.virtiofsX") && !fs_is_helper_name("sm-agent"),
	   "helper names: mount.virtiofs and mount.smfs only");
	struct fs_helper_args ha;
	struct sm_err herr;
	char *bb[] = {"mount.virtiofs", "workspace", "/work", NULL};
	ok(fs_helper_parse(3, bb, &ha, &herr) == 0 && !strcmp(ha.tag, "workspace") &&
	       !strcmp(ha.dir, "/work") && !ha.ro && !ha.fake,
	   "busybox: <tag> <dir>");
	char *bbo[] = {"mount.virtiofs", "w", "rel/dir", "-o", "noatime,ro", NULL};
	ok(fs_helper_parse(5, bbo, &ha, &herr) == 0 && ha.ro && !strcmp(ha.dir, "rel/dir"),
	   "-o noatime,ro: read-only, relative dir kept");
	char *ul[] = {"/sbin/mount.virtiofs", "w", "/work", "-s", "-n", "-o", "rw", "-t", "virtiofs", NULL};
	ok(fs_helper_parse(9, ul, &ha, &herr) == 0 && !ha.ro && !ha.fake && !strcmp(ha.tag, "w"),
	   "util-linux: flags, -o rw, -t type are accepted");
	char *ulf[] = {"/sbin/mount.virtiofs", "w", "/work", "-fv", "-oro,rw", NULL};
	ok(fs_helper_parse(5, ulf, &ha, &herr) == 0 && ha.fake && !ha.ro,
	   "-fv sets fake; the last of ro/rw wins (attached -o value)");
	char *ns[] = {"mount.virtiofs", "w", "/work", "-N", "/proc/9/ns/mnt", NULL};
	ok(fs_helper_parse(5, ns, &ha, &herr) < 0 && strstr(herr.msg, "-N"), "-N is refused");
	char *one[] = {"mount.virtiofs", "w", NULL};
	ok(fs_helper_parse(2, one, &ha, &herr) < 0 && strstr(herr.msg, "usage"), "missing dir: usage");
	char *three[] = {"mount.virtiofs", "w", "/a", "/b", NULL};
	ok(fs_helper_parse(4, three, &ha, &herr) < 0, "a third positional argument is refused");
	char *dangling[] = {"mount.virtiofs", "w", "/a", "-o", NULL};
	ok(fs_helper_parse(4, dangling, &ha, &herr) < 0, "-o without a value is refused");
	/* users' binds remembered at fs-detach: which mountinfo lines count */
	char *bmp;
	bool bro;
	char b1[] = "50 30 0:40 / /warm rw,nosuid,nodev,relatime shared:9 - fuse.smfs workspace rw,user_id=0\n";
	ok(fs_binds_match(b1, "workspace", "/run/supermachine/shares/workspace", &bmp, &bro) == 1 && !strcmp(bmp, "/warm") &&
	       !bro,
	   "a user's bind of the tag is remembered (rw)");
	char b2[] = "51 30 0:40 / /my\\040ro ro,nosuid,nodev - fuse.smfs workspace rw\n";
	ok(fs_binds_match(b2, "workspace", "/run/supermachine/shares/workspace", &bmp, &bro) == 1 &&
	       !strcmp(bmp, "/my ro") && bro,
	   "a read-only bind keeps its ro flag; escaped mount point");
	char b3[] = "49 30 0:40 / /run/supermachine/shares/workspace rw,nosuid - fuse.smfs workspace rw\n";
	ok(fs_binds_match(b3, "workspace", "/run/supermachine/shares/workspace", &bmp, &bro) == 0,
	   "the staging mount is not a user's bind");
	char b4[] = "52 30 0:40 / /other rw - fuse.smfs other rw\n";
	ok(fs_binds_match(b4, "workspace", "/run/supermachine/shares/workspace", &bmp, &bro) == 0, "another tag: no");
	char b5[] = "53 30 0:41 / /t rw - tmpfs workspace rw\n";
	ok(fs_binds_match(b5, "workspace", "/run/supermachine/shares/workspace", &bmp, &bro) == 0,
	   "another fstype with the tag as source: no");
	char b6[] = "53 30 0:41\n";
	ok(fs_binds_match(b6, "workspace", "/x", &bmp, &bro) < 0, "a short line is malformed");
	char b7[] = "54 30 0:40 / /rox rox,nosuid - fuse.smfs workspace rw\n";
	ok(fs_binds_match(b7, "workspace", "/x", &bmp, &bro) == 1 && !bro, "ro means the option ro, not a prefix");
	free(rbuf);
	return tap_done();
}
