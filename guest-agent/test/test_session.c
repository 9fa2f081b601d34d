/* Session-level tests of the real protocol server (src/loop.c and the files around it) on the host: the agent
 * serves one end of a socketpair in a child process (agent_serve_fd, no boot), the test
 * speaks frames on the other end. Covers handshake, resync, ops, channels, flow control
 * and every session-state violation of SPEC 9.1 that the vectors cannot express. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "sm.h"
#include "tap.h"

static int fd = -1;
static pid_t agent_pid;
static uint8_t rbuf[8 << 20];
static size_t rlen;
static struct cb_item items[SM_MAX_ITEMS];
static struct cb_doc doc;
static uint8_t body[6 << 20];

static void start_agent(void)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		exit(99);
	fflush(stdout);
	agent_pid = fork();
	if (agent_pid == 0) {
		close(sv[0]);
		static struct sm_config cfg;
		memset(&cfg, 0, sizeof(cfg));
		strcpy(cfg.hostname, "test");
		cfg.start = START_NEVER;
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 2); /* the agent logs violations: keep TAP output clean */
		_exit(agent_serve_fd(&cfg, sv[1]) == 0 ? 0 : 1);
	}
	close(sv[1]);
	fd = sv[0];
	rlen = 0;
}

static void send_raw(const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t w = write(fd, b, n);
		if (w <= 0)
			return;
		b += w;
		n -= (size_t)w;
	}
}

static void send_buf(struct cb_buf *b)
{
	uint8_t h[4] = {(uint8_t)(b->len >> 24), (uint8_t)(b->len >> 16), (uint8_t)(b->len >> 8), (uint8_t)b->len};
	send_raw(h, 4);
	send_raw(b->p, b->len);
	cbe_free(b);
}

/* Next frame within timeout_ms; 1 = got one (in doc), 0 = timeout/EOF. */
static int recv_frame(int timeout_ms)
{
	for (;;) {
		if (rlen >= 4) {
			uint32_t n = (uint32_t)rbuf[0] << 24 | (uint32_t)rbuf[1] << 16 | (uint32_t)rbuf[2] << 8 | rbuf[3];
			if (rlen >= 4 + (size_t)n) {
				memcpy(body, rbuf + 4, n);
				memmove(rbuf, rbuf + 4 + n, rlen - 4 - n);
				rlen -= 4 + n;
				return cb_decode(&doc, body, n, items, SM_MAX_ITEMS, NULL) == 0;
			}
		}
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, timeout_ms) <= 0)
			return 0;
		ssize_t r = read(fd, rbuf + rlen, sizeof(rbuf) - rlen);
		if (r <= 0)
			return 0;
		rlen += (size_t)r;
	}
}

static bool is_t(const char *t)
{
	int i = cb_map_get(&doc, 0, "t");
	return i >= 0 && cb_text_eq(&doc, (uint32_t)i, t);
}

static uint64_t get_u(uint32_t map, const char *k)
{
	int i = cb_map_get(&doc, map, k);
	return i >= 0 && doc.items[i].type == CB_UINT ? doc.items[i].u : UINT64_MAX;
}

static int64_t get_i(uint32_t map, const char *k)
{
	int i = cb_map_get(&doc, map, k);
	if (i < 0)
		return INT64_MIN;
	return doc.items[i].type == CB_UINT ? (int64_t)doc.items[i].u : -1 - (int64_t)doc.items[i].u;
}

static bool text_is(uint32_t map, const char *k, const char *v)
{
	int i = cb_map_get(&doc, map, k);
	return i >= 0 && cb_text_eq(&doc, (uint32_t)i, v);
}

static bool bytes_is(uint32_t map, const char *k, const char *v)
{
	int i = cb_map_get(&doc, map, k);
	return i >= 0 && doc.items[i].type == CB_BYTES && doc.items[i].len == strlen(v) &&
	       !memcmp(cb_ptr(&doc, (uint32_t)i), v, strlen(v));
}

/* Skip frames until one of type t (e.g. a res among data frames); 1 if found. */
static int recv_t(const char *t, int timeout_ms)
{
	while (recv_frame(timeout_ms))
		if (is_t(t))
			return 1;
	return 0;
}

static void hello(uint32_t nonce)
{
	struct cb_buf b;
	cbe_init(&b, 4096);
	cbe_map(&b, 6);
	cbe_text(&b, "t");
	cbe_text(&b, "hello");
	cbe_text(&b, "v");
	cbe_uint(&b, 1);
	cbe_text(&b, "host");
	cbe_text(&b, "test");
	cbe_text(&b, "maxFrame");
	cbe_uint(&b, SM_MAX_FRAME_BYTES);
	cbe_text(&b, "window");
	cbe_uint(&b, 65536);
	cbe_text(&b, "nonce");
	cbe_uint(&b, nonce);
	send_buf(&b);
}

static void req_begin(struct cb_buf *b, uint32_t id, const char *op, unsigned nargs)
{
	cbe_init(b, 8 << 20);
	cbe_map(b, 4);
	cbe_text(b, "t");
	cbe_text(b, "req");
	cbe_text(b, "id");
	cbe_uint(b, id);
	cbe_text(b, "op");
	cbe_text(b, op);
	cbe_text(b, "args");
	cbe_map(b, nargs);
}

static void chan_frame(const char *t, uint32_t ch, uint64_t n, const void *d, size_t dlen)
{
	struct cb_buf b;
	cbe_init(&b, 8 << 20);
	cbe_map(&b, d || n ? 3 : 2);
	cbe_text(&b, "t");
	cbe_text(&b, t);
	cbe_text(&b, "ch");
	cbe_uint(&b, ch);
	if (d) {
		cbe_text(&b, "d");
		cbe_bytes(&b, d, dlen);
	} else if (n) {
		cbe_text(&b, "n");
		cbe_uint(&b, n);
	}
	send_buf(&b);
}

static void exec_req(uint32_t id, const char *sh, uint32_t ch_out, uint32_t ch_err, uint64_t timeout_ms)
{
	struct cb_buf b;
	req_begin(&b, id, "exec", timeout_ms ? 4 : 3);
	cbe_text(&b, "argv");
	cbe_array(&b, 3);
	cbe_text(&b, "sh");
	cbe_text(&b, "-c");
	cbe_text(&b, sh);
	cbe_text(&b, "chOut");
	cbe_uint(&b, ch_out);
	cbe_text(&b, "chErr");
	cbe_uint(&b, ch_err);
	if (timeout_ms) {
		cbe_text(&b, "timeoutMs");
		cbe_uint(&b, timeout_ms);
	}
	send_buf(&b);
}

static void spawn_cat(uint32_t id, uint32_t out, uint32_t err, uint32_t in)
{
	struct cb_buf b;
	req_begin(&b, id, "spawn", 4);
	cbe_text(&b, "argv");
	cbe_array(&b, 1);
	cbe_text(&b, "cat");
	cbe_text(&b, "chOut");
	cbe_uint(&b, out);
	cbe_text(&b, "chErr");
	cbe_uint(&b, err);
	cbe_text(&b, "chIn");
	cbe_uint(&b, in);
	send_buf(&b);
}

static uint32_t result_map(void)
{
	int r = cb_map_get(&doc, 0, "result");
	return r < 0 ? 0 : (uint32_t)r;
}

static bool fatal_is(const char *code)
{
	return recv_t("fatal", 5000) && text_is(0, "code", code);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	start_agent();

	/* resync: garbage before the hello is skipped */
	send_raw("\x00\x00\x00\x10garbage-bytes\xa1\x61", 19);
	hello(42);
	ok(recv_frame(5000) && is_t("hello") && get_u(0, "nonce") == 42 && get_u(0, "v") == 1, "hello answered after garbage, nonce echoed");
	int ready = cb_map_get(&doc, 0, "ready");
	ok(ready >= 0 && doc.items[ready].type == CB_TRUE && get_u(0, "window") == SM_WINDOW_BYTES, "ready:true, window announced");

	struct cb_buf b;
	req_begin(&b, 1, "ping", 0);
	send_buf(&b);
	ok(recv_frame(5000) && is_t("res") && get_u(0, "id") == 1 && cb_map_get(&doc, 0, "result") > 0, "ping → {}");

	req_begin(&b, 2, "frobnicate", 0);
	send_buf(&b);
	ok(recv_frame(5000) && is_t("res") && cb_map_get(&doc, 0, "error") > 0 &&
		   text_is((uint32_t)cb_map_get(&doc, 0, "error"), "code", "SM_UNKNOWN_OP"),
	   "unknown op → SM_UNKNOWN_OP, session continues");

	exec_req(3, "echo hi; echo err >&2; exit 4", 10, 11, 0);
	ok(recv_t("res", 10000) && get_u(0, "id") == 3 && get_i(result_map(), "exitCode") == 4 &&
		   bytes_is(result_map(), "stdout", "hi\n") && bytes_is(result_map(), "stderr", "err\n"),
	   "exec: exit code, stdout, stderr in the result");

	req_begin(&b, 4, "exec", 3);
	cbe_text(&b, "argv");
	cbe_array(&b, 1);
	cbe_text(&b, "/definitely/missing");
	cbe_text(&b, "chOut");
	cbe_uint(&b, 12);
	cbe_text(&b, "chErr");
	cbe_uint(&b, 13);
	send_buf(&b);
	ok(recv_t("res", 10000) && get_i(result_map(), "exitCode") == 127 &&
		   bytes_is(result_map(), "stderr", "sm-agent: /definitely/missing: command not found\n"),
	   "missing binary → 127 + message");

	exec_req(5, "sleep 5 & sleep 5", 14, 15, 200);
	ok(recv_t("res", 10000) && get_i(result_map(), "exitCode") == -1 && get_u(result_map(), "signal") == 9 &&
		   doc.items[cb_map_get(&doc, result_map(), "timedOut")].type == CB_TRUE,
	   "timeout → -1, signal 9, timedOut");

	exec_req(6, "echo x", 3, 16, 0); /* 3 < 15: not increasing */
	ok(recv_t("res", 5000) && text_is((uint32_t)cb_map_get(&doc, 0, "error"), "code", "EINVAL"),
	   "channel ids must increase → EINVAL");

	/* 200 KiB through exec: more than the collect buffer, within the host window of 64 KiB →
	 * data frames, credit from us, then the tail in the result */
	exec_req(7, "head -c 204800 /dev/zero", 20, 21, 0);
	size_t streamed = 0, tail = 0;
	for (;;) {
		if (!recv_frame(10000))
			break;
		if (is_t("data") && get_u(0, "ch") == 20) {
			int d = cb_map_get(&doc, 0, "d");
			streamed += doc.items[d].len;
			chan_frame("credit", 20, doc.items[d].len, NULL, 0);
		} else if (is_t("res")) {
			int so = cb_map_get(&doc, result_map(), "stdout");
			tail = doc.items[so].len;
			break;
		}
	}
	ok(streamed + tail == 204800 && streamed > 0, "exec output = data frames (%zu) + result tail (%zu)", streamed, tail);

	/* spawn cat: stdin → stdout, eof, exit event ordering */
	spawn_cat(8, 30, 31, 32);
	ok(recv_t("res", 5000) && get_u(result_map(), "pid") != UINT64_MAX, "spawn → pid");
	chan_frame("data", 32, 0, "ping-pong", 9);
	ok(recv_t("data", 5000) && get_u(0, "ch") == 30 && bytes_is(0, "d", "ping-pong"), "stdin data echoed on chOut");
	chan_frame("eof", 32, 0, NULL, 0);
	int eofs = 0, exit_after = 0;
	for (int i = 0; i < 6 && recv_frame(5000); i++) {
		if (is_t("eof"))
			eofs++;
		if (is_t("evt") && text_is(0, "ev", "exit")) {
			exit_after = eofs == 2;
			break;
		}
	}
	ok(exit_after, "eof on chOut and chErr precede the exit event");

	/* 1 MiB through cat: host→agent data limited by the agent's credit, agent→host by ours */
	spawn_cat(9, 40, 41, 42);
	recv_t("res", 5000);
	{
		static uint8_t chunk[65536];
		size_t total = 1 << 20, sent = 0, echoed = 0;
		uint64_t credit = SM_WINDOW_BYTES;
		bool eof_sent = false;
		int idle = 0;
		while (echoed < total && idle < 50) {
			while (sent < total && credit > 0) {
				size_t n = sizeof(chunk);
				if (n > credit)
					n = (size_t)credit;
				if (n > total - sent)
					n = total - sent;
				chan_frame("data", 42, 0, chunk, n);
				sent += n;
				credit -= n;
			}
			if (sent == total && !eof_sent) {
				chan_frame("eof", 42, 0, NULL, 0);
				eof_sent = true;
			}
			if (!recv_frame(200)) {
				idle++;
				continue;
			}
			idle = 0;
			if (is_t("credit") && get_u(0, "ch") == 42)
				credit += get_u(0, "n");
			if (is_t("data") && get_u(0, "ch") == 40) {
				size_t n = doc.items[cb_map_get(&doc, 0, "d")].len;
				echoed += n;
				chan_frame("credit", 40, n, NULL, 0);
			}
		}
		ok(echoed == total, "1 MiB through cat with credit both ways (echoed %zu, sent %zu)", echoed, sent);
		recv_t("evt", 5000);
	}

	/* violations: each ends the session with fatal; a new hello starts over */
	chan_frame("data", 999, 0, "x", 1);
	ok(fatal_is("SM_UNKNOWN_CHANNEL"), "data on an unknown channel → SM_UNKNOWN_CHANNEL");
	hello(7);
	ok(recv_t("hello", 5000) && get_u(0, "nonce") == 7, "new session after fatal");

	spawn_cat(1, 1, 2, 3);
	recv_t("res", 5000);
	chan_frame("credit", 1, 65537, NULL, 0); /* host window 64 KiB: 64 KiB + 65537 > window */
	ok(fatal_is("SM_CREDIT_OVERFLOW"), "credit beyond the window → SM_CREDIT_OVERFLOW");
	hello(8);
	recv_t("hello", 5000);

	spawn_cat(1, 1, 2, 3);
	recv_t("res", 5000);
	static uint8_t big[SM_WINDOW_BYTES + 1];
	chan_frame("data", 3, 0, big, sizeof(big));
	ok(fatal_is("SM_CREDIT_EXCEEDED"), "data beyond the agent's window → SM_CREDIT_EXCEEDED");
	hello(9);
	recv_t("hello", 5000);

	spawn_cat(1, 1, 2, 3);
	recv_t("res", 5000);
	chan_frame("data", 1, 0, "x", 1);
	ok(fatal_is("SM_UNKNOWN_CHANNEL") && strstr((const char *)cb_ptr(&doc, (uint32_t)cb_map_get(&doc, 0, "message")), "direction"),
	   "data on chOut (wrong direction) → SM_UNKNOWN_CHANNEL");
	hello(10);
	recv_t("hello", 5000);

	spawn_cat(1, 1, 2, 3);
	recv_t("res", 5000);
	chan_frame("eof", 3, 0, NULL, 0);
	chan_frame("data", 3, 0, "x", 1);
	ok(fatal_is("SM_UNKNOWN_CHANNEL") || (is_t("fatal") && text_is(0, "code", "SM_DATA_AFTER_EOF")),
	   "data after eof is a violation");
	hello(11);
	recv_t("hello", 5000);

	exec_req(5, "sleep 2", 1, 2, 0);
	req_begin(&b, 5, "ping", 0);
	send_buf(&b);
	ok(fatal_is("SM_DUPLICATE_ID"), "req id still pending → SM_DUPLICATE_ID");
	hello(12);
	recv_t("hello", 5000);

	/* credit and close for unknown channels are ignored (may cross a removal) */
	chan_frame("credit", 4242, 1, NULL, 0);
	chan_frame("close", 4243, 0, NULL, 0);
	req_begin(&b, 77, "ping", 0);
	send_buf(&b);
	/* events of processes from earlier sessions (e.g. the exit of a cat) may arrive first: skip them */
	ok(recv_t("res", 5000) && get_u(0, "id") == 77, "credit/close for unknown channels ignored");

	/* files */
	char path[64];
	snprintf(path, sizeof(path), "/tmp/sm-agent-test-%d/a/b.txt", (int)getpid());
	req_begin(&b, 20, "write-file", 3);
	cbe_text(&b, "path");
	cbe_text(&b, path);
	cbe_text(&b, "data");
	cbe_bytes(&b, "content", 7);
	cbe_text(&b, "mode");
	cbe_uint(&b, 0751);
	send_buf(&b);
	ok(recv_t("res", 5000) && cb_map_get(&doc, 0, "result") > 0, "write-file with mkdirs");
	req_begin(&b, 21, "read-file", 1);
	cbe_text(&b, "path");
	cbe_text(&b, path);
	send_buf(&b);
	ok(recv_t("res", 5000) && bytes_is(result_map(), "data", "content") && get_u(result_map(), "mode") == 0751,
	   "read-file returns data and mode 0751");
	req_begin(&b, 22, "read-file", 1);
	cbe_text(&b, "path");
	cbe_text(&b, "/tmp");
	send_buf(&b);
	ok(recv_t("res", 5000) && get_u(0, "id") == 22 && cb_map_get(&doc, 0, "error") > 0 &&
	       text_is((uint32_t)cb_map_get(&doc, 0, "error"), "code", "EINVAL"),
	   "read-file of a directory → EINVAL");
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf /tmp/sm-agent-test-%d", (int)getpid());
	if (system(cmd) != 0)
		printf("# cleanup failed\n");

	/* a frame claiming 5 MiB + 1 */
	send_raw("\x00\x50\x00\x01", 4);
	ok(fatal_is("SM_FRAME_TOO_LARGE"), "oversized length prefix → SM_FRAME_TOO_LARGE");

	close(fd);
	int st = 0;
	waitpid(agent_pid, &st, 0);
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "agent ends cleanly when the transport closes (no crash)");
	return tap_done();
}
