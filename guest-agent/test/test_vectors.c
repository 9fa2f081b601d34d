/* Runs packages/agent-protocol/test-vectors/vectors.json (via the generated
 * out/test/vectors.h) against the agent's framing, CBOR decoder, frame schema and
 * request-argument checks. Exit 77 when the vectors file is not there. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump.h"
#include "proto.h"
#include "tap.h"
#include "vectors.h"

#ifdef SM_VECTORS_MISSING
int main(void)
{
	printf("1..0 # SKIP packages/agent-protocol/test-vectors/vectors.json not found\n");
	return 77;
}
#else
static bool framing_code(const char *c)
{
	return c && (!strcmp(c, E_FRAME_EMPTY) || !strcmp(c, E_FRAME_TOO_LARGE));
}

int main(void)
{
	size_t nv = sizeof(VECTORS) / sizeof(VECTORS[0]);
	struct cb_item *items = malloc(sizeof(struct cb_item) * SM_MAX_ITEMS);
	for (size_t i = 0; i < nv; i++) {
		const struct vector *v = &VECTORS[i];
		const uint8_t *p = (const uint8_t *)v->bytes;
		size_t total = 0;
		struct sm_err fe = {.code = NULL};
		int fr = proto_frame_len(p, v->len, SM_MAX_FRAME_BYTES, &total, &fe);
		const char *code = fe.code;
		if (v->incomplete) {
			ok(fr == 0, "%s: incomplete frame waits for more bytes", v->name);
			continue;
		}
		if (framing_code(v->error)) {
			ok(fr < 0 && !strcmp(code, v->error), "%s: framing rejects with %s (got %s)", v->name,
			   v->error, fr < 0 ? code : "accept");
			continue;
		}
		if (fr != 1 || total != v->len) {
			ok(0, "%s: framing did not yield exactly one frame (fr=%d)", v->name, fr);
			continue;
		}
		const uint8_t *body = p + 4;
		size_t blen = v->len - 4;
		bool agent_receives = v->direction != 2;
		if (!v->valid) {
			if (!agent_receives && strcmp(v->error ? v->error : "", E_BAD_CBOR) != 0) {
				skip("%s: host-side result/event schema (%s)", v->name, v->error ? v->error : "-");
				continue;
			}
			struct cb_doc d;
			struct frame_info fi;
			struct sm_err e = {.code = NULL};
			const char *msg = e.msg;
			int r = agent_receives
					? proto_check_frame(&d, body, blen, items, SM_MAX_ITEMS,
							    SM_MAX_FRAME_BYTES - SM_DATA_OVERHEAD_BYTES, &fi, &e)
					: (cb_decode(&d, body, blen, items, SM_MAX_ITEMS, NULL) < 0 ? (e.code = E_BAD_CBOR, -1) : 0);
			code = e.code;
			if (!v->error) {
				ok(r < 0, "%s: rejected (%s)", v->name, code ? code : "accepted");
				continue;
			}
			ok(r < 0 && code && !strcmp(code, v->error), "%s: rejected with %s (got %s: %s)", v->name,
			   v->error, r < 0 ? code : "accepted", msg);
			continue;
		}
		/* valid: decode, compare meaning */
		struct cb_doc d;
		const char *derr = NULL;
		int r = cb_decode(&d, body, blen, items, SM_MAX_ITEMS, &derr);
		if (r < 0) {
			ok(0, "%s: decodes (%s)", v->name, derr);
			continue;
		}
		if (v->meaning) {
			struct sbuf sb = {0};
			dump_item(&sb, &d, 0);
			ok(sb.p && !strcmp(sb.p, v->meaning), "%s: meaning matches", v->name);
			if (!sb.p || strcmp(sb.p, v->meaning))
				printf("#  got  %s\n#  want %s\n", sb.p, v->meaning);
			free(sb.p);
		}
		if (!agent_receives)
			continue;
		struct frame_info fi;
		struct sm_err e = {.code = ""};
		const char *msg = e.msg;
		r = proto_check_frame(&d, body, blen, items, SM_MAX_ITEMS, SM_MAX_FRAME_BYTES - SM_DATA_OVERHEAD_BYTES,
				      &fi, &e);
		ok(r == 0, "%s: accepted by the agent%s%s", v->name, r ? ": " : "", r ? msg : "");
		if (r == 0 && fi.kind == FK_REQ) {
			e.code = NULL;
			int a = args_check_op(&d, fi.op, fi.args, &e);
			const char *rc = e.code;
			if (v->res_error)
				ok(a != 0 && !strcmp(rc, v->res_error), "%s: answered with error %s (got %s: %s)",
				   v->name, v->res_error, a ? rc : "ok", msg);
			else
				ok(a == 0, "%s: args valid%s%s", v->name, a ? ": " : "", a ? msg : "");
		}
	}
	free(items);
	return tap_done();
}
#endif
