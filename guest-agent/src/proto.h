/* Frame-level validation and request-argument parsing (SPEC sections 3, 5, 6).
 * Pure functions over a decoded frame: no side effects, unit-testable. */
#ifndef SM_PROTO_H
#define SM_PROTO_H

#include "sm.h"

enum frame_kind { FK_HELLO = 1, FK_REQ, FK_DATA, FK_CREDIT, FK_EOF, FK_CLOSE, FK_FATAL };

struct frame_info {
	enum frame_kind kind;
	/* hello */
	uint64_t v, max_frame, window;
	bool has_nonce;
	uint32_t nonce;
	/* req */
	uint32_t id;
	uint32_t op;   /* item index of op text */
	uint32_t args; /* item index of args map */
	/* data/credit/eof/close */
	uint32_t ch;
	uint32_t d; /* item index of data bytes */
	uint64_t n;
};

/* Violation codes (SPEC 9.1). */
#define E_FRAME_EMPTY "SM_FRAME_EMPTY"
#define E_FRAME_TOO_LARGE "SM_FRAME_TOO_LARGE"
#define E_BAD_CBOR "SM_BAD_CBOR"
#define E_BAD_FRAME "SM_BAD_FRAME"
#define E_UNKNOWN_FRAME "SM_UNKNOWN_FRAME"
#define E_DUPLICATE_ID "SM_DUPLICATE_ID"
#define E_UNKNOWN_CHANNEL "SM_UNKNOWN_CHANNEL"
#define E_DATA_AFTER_EOF "SM_DATA_AFTER_EOF"
#define E_CREDIT_EXCEEDED "SM_CREDIT_EXCEEDED"
#define E_CREDIT_OVERFLOW "SM_CREDIT_OVERFLOW"
#define E_VERSION "SM_VERSION"

/* Framing (SPEC 1): given the bytes available, returns 1 with *total (prefix + body)
 * when a whole frame is there, 0 when more bytes are needed, -EPROTO with e (the violation
 * code) on a violation detectable from the prefix alone. */
int proto_frame_len(const uint8_t *p, size_t avail, uint32_t max_frame, size_t *total, struct sm_err *e);

/* Decode + validate one frame body received by the agent (host→agent direction).
 * Returns 0, or -EPROTO with e (the violation code and a message). */
int proto_check_frame(struct cb_doc *doc, const uint8_t *body, size_t len, struct cb_item *items,
		      uint32_t cap, uint32_t max_data, struct frame_info *fi, struct sm_err *e);

/* ---- request arguments ---- */

struct cmd_args {
	int argv;  /* array index */
	int env;   /* map index or -1 */
	int cwd;   /* text index or -1 */
	int user;  /* text index or -1 */
};

struct exec_args {
	struct cmd_args cmd;
	int stage; /* array index or -1 */
	uint64_t timeout_ms;
	int chain; /* map index or -1 */
	struct cmd_args chain_cmd;
	bool tty;
	uint16_t cols, rows;
	uint32_t ch_out, ch_err, ch_in;
	bool has_ch_err;
};

/* Every parser returns 0 or -errno with e: code EINVAL (SM_FILE_TOO_LARGE for a stage file over
 * the limit) and the message "<field>: <problem>". */
int args_exec(const struct cb_doc *d, uint32_t args, bool spawn, struct exec_args *a, struct sm_err *e);
int args_uint(const struct cb_doc *d, uint32_t map, const char *key, bool required, uint64_t min,
	      uint64_t max, uint64_t *out, struct sm_err *e);
int args_path(const struct cb_doc *d, uint32_t map, const char *key, int *out, struct sm_err *e);
int args_bytes(const struct cb_doc *d, uint32_t map, const char *key, int *out, struct sm_err *e);
int args_bool(const struct cb_doc *d, uint32_t map, const char *key, bool def, bool *out, struct sm_err *e);

/* Share tag (SPEC 6.4) into out (FS_TAG_MAX + 1 bytes); fs-attach args (path: text index or -1). */
int args_tag(const struct cb_doc *d, uint32_t map, const char *key, char *out, struct sm_err *e);
int args_fs_attach(const struct cb_doc *d, uint32_t args, char *tag, uint32_t *ch, int *path, struct sm_err *e);

/* dial-answer (SPEC 6.5): id, and exactly one of ch (0 = absent) and error (text index or -1). */
int args_dial_answer(const struct cb_doc *d, uint32_t args, uint32_t *id, uint32_t *ch, int *error, struct sm_err *e);
/* dns-answer (SPEC 6.5): id and the answer bytes (index), 12..SM_EG_DNS_ANSWER_MAX bytes. */
int args_dns_answer(const struct cb_doc *d, uint32_t args, uint32_t *id, int *answer, struct sm_err *e);

/* Validate the args of a known op without running it (the test vectors and the fuzzer; the op
 * names come from the ops table, ops.h). Returns 0, 1 for an unknown op (e->code SM_UNKNOWN_OP),
 * or -errno with e. */
int args_check_op(const struct cb_doc *d, uint32_t op, uint32_t args, struct sm_err *e);

#endif
