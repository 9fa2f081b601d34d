/* Canonical text form of a decoded CBOR item, shared with scripts/gen-vectors.mjs:
 * maps with keys sorted byte-wise, text/bytes as hex. Used to compare decodes with
 * the vectors' JSON "meaning". */
#ifndef SM_DUMP_H
#define SM_DUMP_H
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cbor.h"

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap * 2 : 256;
		while (nc < b->len + n + 1)
			nc *= 2;
		b->p = realloc(b->p, nc);
		b->cap = nc;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void sb_str(struct sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_hex(struct sbuf *b, const uint8_t *p, size_t n)
{
	static const char hx[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		char c[2] = {hx[p[i] >> 4], hx[p[i] & 15]};
		sb_put(b, c, 2);
	}
}

static const struct cb_doc *sort_doc;
static int key_order(const void *a, const void *b)
{
	const struct cb_item *x = &sort_doc->items[*(const uint32_t *)a];
	const struct cb_item *y = &sort_doc->items[*(const uint32_t *)b];
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(sort_doc->buf + x->off, sort_doc->buf + y->off, n);
	if (c)
		return c;
	return x->len < y->len ? -1 : x->len > y->len ? 1 : 0;
}

static void dump_item(struct sbuf *b, const struct cb_doc *d, uint32_t i)
{
	const struct cb_item *it = &d->items[i];
	char num[32];
	switch (it->type) {
	case CB_UINT:
		snprintf(num, sizeof(num), "%" PRIu64, it->u);
		sb_str(b, num);
		break;
	case CB_NINT:
		snprintf(num, sizeof(num), "%" PRId64, (int64_t)(-1 - (int64_t)it->u));
		sb_str(b, num);
		break;
	case CB_BYTES:
		sb_str(b, "h");
		sb_hex(b, d->buf + it->off, it->len);
		break;
	case CB_TEXT:
		sb_str(b, "t");
		sb_hex(b, d->buf + it->off, it->len);
		break;
	case CB_TRUE:
		sb_str(b, "true");
		break;
	case CB_FALSE:
		sb_str(b, "false");
		break;
	case CB_NULL:
		sb_str(b, "null");
		break;
	case CB_ARRAY: {
		sb_str(b, "[");
		uint32_t k = i + 1;
		for (uint32_t n = 0; n < it->count; n++) {
			if (n)
				sb_str(b, ",");
			dump_item(b, d, k);
			k = d->items[k].next;
		}
		sb_str(b, "]");
		break;
	}
	case CB_MAP: {
		uint32_t *keys = malloc(sizeof(uint32_t) * (it->count + 1));
		uint32_t k = i + 1;
		for (uint32_t n = 0; n < it->count; n++) {
			keys[n] = k;
			k = d->items[d->items[k].next].next;
		}
		sort_doc = d;
		qsort(keys, it->count, sizeof(uint32_t), key_order);
		sb_str(b, "{");
		for (uint32_t n = 0; n < it->count; n++) {
			if (n)
				sb_str(b, ",");
			dump_item(b, d, keys[n]);
			sb_str(b, ":");
			dump_item(b, d, d->items[keys[n]].next);
		}
		sb_str(b, "}");
		free(keys);
		break;
	}
	default:
		sb_str(b, "?");
	}
}
#endif
