#include "cbor.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool utf8_valid(const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = p[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t need;
		uint32_t cp;
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i - 1 < need)
			return false;
		for (size_t k = 1; k <= need; k++) {
			uint8_t cc = p[i + k];
			if ((cc & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (cc & 0x3f);
		}
		if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += need + 1;
	}
	return true;
}

struct frame {
	uint32_t idx;
	uint64_t left; /* children still expected */
	bool map;
};

static int key_cmp(const void *a, const void *b, void *ctx);

/* Byte-wise duplicate detection for the text keys of one map. */
/* Heap sort step: moves keys[root] down the max-heap keys[0..n) until its children are not larger. */
static void sift_down(uint32_t *keys, uint32_t root, uint32_t n, const struct cb_doc *d)
{
	for (;;) {
		uint32_t child = 2 * root + 1;
		if (child >= n)
			return;
		if (child + 1 < n && key_cmp(&keys[child], &keys[child + 1], (void *)d) < 0)
			child++;
		if (key_cmp(&keys[root], &keys[child], (void *)d) >= 0)
			return;
		uint32_t t = keys[root];
		keys[root] = keys[child];
		keys[child] = t;
		root = child;
	}
}

static int map_has_dup(const struct cb_doc *d, uint32_t map)
{
	const struct cb_item *m = &d->items[map];
	uint32_t n = m->count;
	if (n < 2)
		return 0;
	if (n <= 16) {
		uint32_t keys[16];
		uint32_t k = map + 1;
		for (uint32_t i = 0; i < n; i++) {
			keys[i] = k;
			k = d->items[d->items[k].next].next;
		}
		for (uint32_t i = 0; i < n; i++)
			for (uint32_t j = i + 1; j < n; j++)
				if (key_cmp(&keys[i], &keys[j], (void *)d) == 0)
					return 1;
		return 0;
	}
	uint32_t *keys = malloc((size_t)n * sizeof(uint32_t));
	if (!keys)
		return -ENOMEM;
	uint32_t k = map + 1;
	for (uint32_t i = 0; i < n; i++) {
		keys[i] = k;
		k = d->items[d->items[k].next].next;
	}
	/* insertion-free: heap sort keeps this O(n log n) without recursion */
	int dup = 0;
	for (uint32_t start = n / 2; start-- > 0;)
		sift_down(keys, start, n, d);
	for (uint32_t end = n - 1; end > 0; end--) {
		uint32_t t = keys[0];
		keys[0] = keys[end];
		keys[end] = t;
		sift_down(keys, 0, end, d);
	}
	for (uint32_t i = 1; i < n && !dup; i++)
		dup = key_cmp(&keys[i - 1], &keys[i], (void *)d) == 0;
	free(keys);
	return dup;
}

static int key_cmp(const void *a, const void *b, void *ctx)
{
	const struct cb_doc *d = ctx;
	const struct cb_item *x = &d->items[*(const uint32_t *)a];
	const struct cb_item *y = &d->items[*(const uint32_t *)b];
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(d->buf + x->off, d->buf + y->off, x->len);
}

int cb_decode(struct cb_doc *doc, const uint8_t *buf, size_t len, struct cb_item *items,
	      uint32_t cap, const char **err)
{
	struct frame stack[CBOR_MAX_DEPTH + 1];
	int depth = 0;
	size_t pos = 0;
	uint32_t n = 0;
	static const char *dummy;
	if (!err)
		err = &dummy;
	doc->buf = buf;
	doc->len = len;
	doc->items = items;
	doc->n = 0;
	if (len == 0) {
		*err = "empty input";
		return -EINVAL;
	}
	for (;;) {
		if (pos >= len) {
			*err = "truncated item";
			return -EINVAL;
		}
		if (n >= cap) {
			*err = "too many items";
			return -E2BIG;
		}
		uint8_t ib = buf[pos++];
		unsigned major = ib >> 5, ai = ib & 0x1f;
		uint64_t v = 0;
		if (ai < 24) {
			v = ai;
		} else if (ai <= 27) {
			size_t nb = (size_t)1 << (ai - 24);
			if (len - pos < nb) {
				*err = "truncated argument";
				return -EINVAL;
			}
			for (size_t k = 0; k < nb; k++)
				v = (v << 8) | buf[pos + k];
			pos += nb;
		} else if (ai == 31) {
			*err = "indefinite length not allowed";
			return -EINVAL;
		} else {
			*err = "reserved additional information";
			return -EINVAL;
		}
		if (depth > 0 && stack[depth - 1].map && stack[depth - 1].left % 2 == 0 && major != 3) {
			*err = "map key is not a text string";
			return -EINVAL;
		}
		struct cb_item *it = &items[n];
		memset(it, 0, sizeof(*it));
		uint32_t self = n++;
		bool container = false;
		switch (major) {
		case 0:
			it->type = CB_UINT;
			it->u = v;
			break;
		case 1:
			if (v > INT64_MAX) {
				*err = "negative integer out of range";
				return -EINVAL;
			}
			it->type = CB_NINT;
			it->u = v;
			break;
		case 2:
		case 3:
			if (v > len - pos) {
				*err = "truncated string";
				return -EINVAL;
			}
			it->type = major == 2 ? CB_BYTES : CB_TEXT;
			it->off = (uint32_t)pos;
			it->len = (uint32_t)v;
			if (major == 3 && !utf8_valid(buf + pos, (size_t)v)) {
				*err = "invalid UTF-8 in text string";
				return -EINVAL;
			}
			pos += (size_t)v;
			break;
		case 4:
		case 5: {
			/* every child needs at least one byte: reject impossible counts early */
			if (v > CBOR_MAX_CONTAINER_ITEMS) {
				*err = "too many container entries";
				return -EINVAL;
			}
			uint64_t kids = major == 5 ? v * 2 : v;
			if (kids > len - pos) {
				*err = "container longer than input";
				return -EINVAL;
			}
			if (depth >= CBOR_MAX_DEPTH) {
				*err = "nesting too deep";
				return -EINVAL;
			}
			it->type = major == 4 ? CB_ARRAY : CB_MAP;
			it->count = (uint32_t)v;
			if (kids > 0) {
				stack[depth].idx = self;
				stack[depth].left = kids;
				stack[depth].map = major == 5;
				depth++;
				container = true;
			}
			break;
		}
		case 6:
			*err = "tags not allowed";
			return -EINVAL;
		default: /* 7 */
			if (ai == 20)
				it->type = CB_FALSE;
			else if (ai == 21)
				it->type = CB_TRUE;
			else if (ai == 22)
				it->type = CB_NULL;
			else {
				*err = ai >= 25 && ai <= 27 ? "floats not allowed" : "unsupported simple value";
				return -EINVAL;
			}
			break;
		}
		it->next = n;
		if (container)
			continue;
		/* close finished containers */
		while (depth > 0) {
			struct frame *f = &stack[depth - 1];
			f->left--;
			if (f->left > 0)
				break;
			items[f->idx].next = n;
			depth--;
			if (f->map) {
				doc->items = items;
				int dup = map_has_dup(doc, f->idx);
				if (dup) {
					*err = dup < 0 ? "out of memory" : "duplicate map key";
					return dup < 0 ? dup : -EINVAL;
				}
			}
		}
		if (depth == 0)
			break;
	}
	if (pos != len) {
		*err = "trailing bytes after item";
		return -EINVAL;
	}
	doc->n = n;
	return 0;
}

const uint8_t *cb_ptr(const struct cb_doc *d, uint32_t i)
{
	return d->buf + d->items[i].off;
}

bool cb_text_eq(const struct cb_doc *d, uint32_t i, const char *s)
{
	const struct cb_item *it = &d->items[i];
	size_t n = strlen(s);
	return it->type == CB_TEXT && it->len == n && memcmp(d->buf + it->off, s, n) == 0;
}

int cb_map_get(const struct cb_doc *d, uint32_t map, const char *key)
{
	const struct cb_item *m = &d->items[map];
	if (m->type != CB_MAP)
		return -1;
	uint32_t k = map + 1;
	for (uint32_t i = 0; i < m->count; i++) {
		uint32_t val = d->items[k].next;
		if (cb_text_eq(d, k, key))
			return (int)val;
		k = d->items[val].next;
	}
	return -1;
}

/* ---- encoder ---- */

void cbe_init(struct cb_buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void cbe_free(struct cb_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->err = 0;
}

int cbe_reserve(struct cb_buf *b, size_t extra)
{
	if (b->err)
		return b->err;
	if (extra > b->max || b->len > b->max - extra) {
		b->err = -EMSGSIZE;
		return b->err;
	}
	if (b->len + extra <= b->cap)
		return 0;
	size_t nc = b->cap ? b->cap : 256;
	while (nc < b->len + extra)
		nc *= 2;
	if (nc > b->max)
		nc = b->max;
	uint8_t *np = realloc(b->p, nc);
	if (!np) {
		b->err = -ENOMEM;
		return b->err;
	}
	b->p = np;
	b->cap = nc;
	return 0;
}

void cbe_raw(struct cb_buf *b, const void *p, size_t n)
{
	if (cbe_reserve(b, n))
		return;
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
}

void cbe_head(struct cb_buf *b, unsigned major, uint64_t v)
{
	uint8_t h[9];
	size_t n;
	major <<= 5;
	if (v < 24) {
		h[0] = (uint8_t)(major | v);
		n = 1;
	} else if (v <= 0xff) {
		h[0] = (uint8_t)(major | 24);
		h[1] = (uint8_t)v;
		n = 2;
	} else if (v <= 0xffff) {
		h[0] = (uint8_t)(major | 25);
		h[1] = (uint8_t)(v >> 8);
		h[2] = (uint8_t)v;
		n = 3;
	} else if (v <= 0xffffffffu) {
		h[0] = (uint8_t)(major | 26);
		for (int i = 0; i < 4; i++)
			h[1 + i] = (uint8_t)(v >> (24 - 8 * i));
		n = 5;
	} else {
		h[0] = (uint8_t)(major | 27);
		for (int i = 0; i < 8; i++)
			h[1 + i] = (uint8_t)(v >> (56 - 8 * i));
		n = 9;
	}
	cbe_raw(b, h, n);
}

void cbe_uint(struct cb_buf *b, uint64_t v) { cbe_head(b, 0, v); }

void cbe_int(struct cb_buf *b, int64_t v)
{
	if (v >= 0)
		cbe_head(b, 0, (uint64_t)v);
	else
		cbe_head(b, 1, (uint64_t)(-(v + 1)));
}

void cbe_textn(struct cb_buf *b, const char *s, size_t n)
{
	cbe_head(b, 3, n);
	cbe_raw(b, s, n);
}

void cbe_text(struct cb_buf *b, const char *s) { cbe_textn(b, s, strlen(s)); }

void cbe_bytes(struct cb_buf *b, const void *p, size_t n)
{
	cbe_head(b, 2, n);
	cbe_raw(b, p, n);
}

void cbe_bool(struct cb_buf *b, bool v)
{
	uint8_t c = v ? 0xf5 : 0xf4;
	cbe_raw(b, &c, 1);
}

void cbe_null(struct cb_buf *b)
{
	uint8_t c = 0xf6;
	cbe_raw(b, &c, 1);
}

void cbe_map(struct cb_buf *b, uint64_t pairs) { cbe_head(b, 5, pairs); }
void cbe_array(struct cb_buf *b, uint64_t n) { cbe_head(b, 4, n); }
