/* Minimal, strict CBOR (RFC 8949) codec for the agent protocol.
 *
 * Decoding is zero-copy into a caller-provided, fixed-size array of items laid
 * out in pre-order: the children of a container at index i start at i + 1 and
 * items[i].next is the index just past the container's subtree. No allocation,
 * no recursion on untrusted input beyond CBOR_MAX_DEPTH. */
#ifndef SM_CBOR_H
#define SM_CBOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cb_type {
	CB_UINT = 1,
	CB_NINT,  /* value = -1 - u */
	CB_BYTES,
	CB_TEXT,
	CB_ARRAY,
	CB_MAP,
	CB_FALSE,
	CB_TRUE,
	CB_NULL,
};

#define CBOR_MAX_DEPTH 16               /* SPEC 2: MAX_DEPTH */
#define CBOR_MAX_CONTAINER_ITEMS 65536u /* SPEC 2: MAX_CONTAINER_ITEMS */

struct cb_item {
	uint8_t type;
	uint32_t count; /* array elements or map pairs */
	uint32_t next;  /* index after this item's subtree */
	uint32_t off;   /* bytes/text: offset of payload in the input */
	uint32_t len;   /* bytes/text: payload length */
	uint64_t u;     /* uint / nint magnitude */
};

struct cb_doc {
	const uint8_t *buf;
	size_t len;
	struct cb_item *items;
	uint32_t n;
};

/* Decode exactly one item that spans buf[0..len). Returns 0 or a negative
 * errno value; *err receives a static description on failure. */
int cb_decode(struct cb_doc *doc, const uint8_t *buf, size_t len, struct cb_item *items,
	      uint32_t cap, const char **err);

/* Lookup helpers (doc must be a successful decode). */
int cb_map_get(const struct cb_doc *d, uint32_t map, const char *key); /* index or -1 */
bool cb_text_eq(const struct cb_doc *d, uint32_t i, const char *s);
const uint8_t *cb_ptr(const struct cb_doc *d, uint32_t i);

/* Encoder: appends to a growable buffer with a hard cap. Errors are sticky. */
struct cb_buf {
	uint8_t *p;
	size_t len, cap, max;
	int err; /* 0 or -ENOMEM / -EMSGSIZE */
};

void cbe_init(struct cb_buf *b, size_t max);
void cbe_free(struct cb_buf *b);
int cbe_reserve(struct cb_buf *b, size_t extra);
void cbe_raw(struct cb_buf *b, const void *p, size_t n);
void cbe_head(struct cb_buf *b, unsigned major, uint64_t v);
void cbe_uint(struct cb_buf *b, uint64_t v);
void cbe_int(struct cb_buf *b, int64_t v);
void cbe_text(struct cb_buf *b, const char *s);
void cbe_textn(struct cb_buf *b, const char *s, size_t n);
void cbe_bytes(struct cb_buf *b, const void *p, size_t n);
void cbe_bool(struct cb_buf *b, bool v);
void cbe_null(struct cb_buf *b);
void cbe_map(struct cb_buf *b, uint64_t pairs);
void cbe_array(struct cb_buf *b, uint64_t n);

bool utf8_valid(const uint8_t *p, size_t n);

#endif
