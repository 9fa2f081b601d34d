/* Boot configuration /sm/config.cbor (SPEC: "Boot configuration"). */
#include "sm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int get_text(const struct cb_doc *d, uint32_t map, const char *key, char *dst, size_t cap,
		    bool required, struct sm_err *err)
{
	int i = cb_map_get(d, map, key);
	if (i < 0 || d->items[i].type == CB_NULL) {
		if (required) {
			sm_err_fmt(err, "EINVAL", "config: %s: missing", key);
			return -EINVAL;
		}
		return 0;
	}
	const struct cb_item *it = &d->items[i];
	if (it->type != CB_TEXT || it->len >= cap || memchr(cb_ptr(d, (uint32_t)i), 0, it->len)) {
		sm_err_fmt(err, "EINVAL", "config: %s: must be a text shorter than %zu bytes", key, cap);
		return -EINVAL;
	}
	memcpy(dst, cb_ptr(d, (uint32_t)i), it->len);
	dst[it->len] = 0;
	return 1;
}

static int get_uint(const struct cb_doc *d, uint32_t map, const char *key, uint64_t max, uint64_t *out,
		    struct sm_err *err)
{
	int i = cb_map_get(d, map, key);
	if (i < 0)
		return 0;
	if (d->items[i].type != CB_UINT || d->items[i].u > max) {
		sm_err_fmt(err, "EINVAL", "config: %s: must be an unsigned integer <= %llu", key,
			 (unsigned long long)max);
		return -EINVAL;
	}
	*out = d->items[i].u;
	return 1;
}

static int get_bool(const struct cb_doc *d, uint32_t map, const char *key, bool *out, struct sm_err *err)
{
	int i = cb_map_get(d, map, key);
	if (i < 0)
		return 0;
	if (d->items[i].type != CB_TRUE && d->items[i].type != CB_FALSE) {
		sm_err_fmt(err, "EINVAL", "config: %s: must be a boolean", key);
		return -EINVAL;
	}
	*out = d->items[i].type == CB_TRUE;
	return 1;
}

static char **text_array(const struct cb_doc *d, int idx, const char *what, struct sm_err *err)
{
	if (idx < 0 || d->items[idx].type != CB_ARRAY) {
		sm_err_fmt(err, "EINVAL", "config: %s: must be an array of text", what);
		return NULL;
	}
	uint32_t n = d->items[idx].count;
	char **v = calloc((size_t)n + 1, sizeof(char *));
	if (!v)
		return NULL;
	uint32_t k = (uint32_t)idx + 1;
	for (uint32_t i = 0; i < n; i++) {
		const struct cb_item *it = &d->items[k];
		if (it->type != CB_TEXT || memchr(cb_ptr(d, k), 0, it->len)) {
			sm_err_fmt(err, "EINVAL", "config: %s[%u] must be text without NUL", what, i);
			goto fail;
		}
		v[i] = strndup((const char *)cb_ptr(d, k), it->len);
		if (!v[i])
			goto fail;
		k = it->next;
	}
	return v;
fail:
	for (uint32_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
	return NULL;
}

void config_free(struct sm_config *c)
{
	for (char **p = c->wl_argv; p && *p; p++)
		free(*p);
	for (char **p = c->wl_env; p && *p; p++)
		free(*p);
	free(c->wl_argv);
	free(c->wl_env);
	c->wl_argv = c->wl_env = NULL;
}

#define TRY(x)                                                                                     \
	do {                                                                                       \
		if ((x) < 0)                                                                       \
			goto fail;                                                                 \
	} while (0)

int config_parse(const uint8_t *buf, size_t len, struct sm_config *c, struct sm_err *err)
{
	struct cb_doc d;
	const char *derr = NULL;
	memset(c, 0, sizeof(*c));
	strcpy(c->hostname, "supermachine");
	strcpy(c->root_device, "/dev/vda");
	strcpy(c->wl_cwd, "/");
	c->tmpfs_mib = 0; /* kernel default: half of RAM */
	c->start = START_BOOT;
	uint32_t cap = len < SM_MAX_ITEMS ? (uint32_t)len + 1 : SM_MAX_ITEMS;
	_cleanup_free_ struct cb_item *items = calloc(cap, sizeof(*items));
	if (!items) {
		sm_err_fmt(err, "ENOMEM", "config: out of memory");
		return -ENOMEM;
	}
	if (cb_decode(&d, buf, len, items, cap, &derr) < 0) {
		sm_err_fmt(err, "EINVAL", "config: invalid CBOR: %s", derr);
		goto fail;
	}
	if (d.items[0].type != CB_MAP) {
		sm_err_fmt(err, "EINVAL", "config: not a map");
		goto fail;
	}
	uint64_t v = 0;
	if (get_uint(&d, 0, "v", 0xffff, &v, err) <= 0 || v != 1) {
		sm_err_fmt(err, "EINVAL", "config: v: unsupported or missing version (want 1)");
		goto fail;
	}
	TRY(get_text(&d, 0, "hostname", c->hostname, sizeof(c->hostname), false, err));
	TRY(get_text(&d, 0, "rootDevice", c->root_device, sizeof(c->root_device), false, err));
	v = c->tmpfs_mib;
	TRY(get_uint(&d, 0, "tmpfsMib", 1u << 20, &v, err));
	c->tmpfs_mib = (uint32_t)v;
	if (!c->hostname[0]) {
		sm_err_fmt(err, "EINVAL", "config: hostname: must be 1..64 bytes");
		goto fail;
	}
	char start[16] = "boot";
	TRY(get_text(&d, 0, "startWorkload", start, sizeof(start), false, err));
	if (!strcmp(start, "boot"))
		c->start = START_BOOT;
	else if (!strcmp(start, "resume"))
		c->start = START_RESUME;
	else if (!strcmp(start, "never"))
		c->start = START_NEVER;
	else {
		sm_err_fmt(err, "EINVAL", "config: startWorkload must be boot|resume|never");
		goto fail;
	}
	v = 0;
	TRY(get_uint(&d, 0, "guestPort", 65535, &v, err));
	c->guest_port = (uint32_t)v;
	TRY(get_bool(&d, 0, "listenerRequired", &c->listener_required, err));

	int w = cb_map_get(&d, 0, "workload");
	if (w >= 0 && d.items[w].type == CB_MAP) {
		uint32_t wm = (uint32_t)w;
		c->wl_argv = text_array(&d, cb_map_get(&d, wm, "argv"), "workload.argv", err);
		if (!c->wl_argv)
			goto fail;
		if (!c->wl_argv[0]) {
			sm_err_fmt(err, "EINVAL", "config: workload.argv is empty");
			goto fail;
		}
		int e = cb_map_get(&d, wm, "env");
		if (e >= 0) {
			c->wl_env = text_array(&d, e, "workload.env", err);
			if (!c->wl_env)
				goto fail;
		} else {
			c->wl_env = calloc(1, sizeof(char *));
			if (!c->wl_env)
				goto fail;
		}
		TRY(get_text(&d, wm, "cwd", c->wl_cwd, sizeof(c->wl_cwd), false, err));
		TRY(get_text(&d, wm, "user", c->wl_user, sizeof(c->wl_user), false, err));
		c->has_workload = true;
	} else if (w >= 0 && d.items[w].type != CB_NULL) {
		sm_err_fmt(err, "EINVAL", "config: workload must be a map or null");
		goto fail;
	}

	int vo = cb_map_get(&d, 0, "volumes");
	if (vo >= 0 && d.items[vo].type == CB_ARRAY) {
		uint32_t k = (uint32_t)vo + 1;
		for (uint32_t i = 0; i < d.items[vo].count; i++) {
			if (c->nvolumes >= SM_MAX_VOLUMES || d.items[k].type != CB_MAP) {
				sm_err_fmt(err, "EINVAL", "config: volumes: too many or not a map");
				goto fail;
			}
			struct sm_volume *vol = &c->volumes[c->nvolumes++];
			TRY(get_text(&d, k, "device", vol->device, sizeof(vol->device), true, err));
			TRY(get_text(&d, k, "path", vol->path, sizeof(vol->path), true, err));
			TRY(get_bool(&d, k, "format", &vol->format, err));
			k = d.items[k].next;
		}
	} else if (vo >= 0 && d.items[vo].type != CB_NULL) {
		sm_err_fmt(err, "EINVAL", "config: volumes must be an array");
		goto fail;
	}

	int n = cb_map_get(&d, 0, "network");
	if (n >= 0 && d.items[n].type == CB_MAP) {
		TRY(get_text(&d, (uint32_t)n, "ip", c->net_ip, sizeof(c->net_ip), true, err));
		TRY(get_text(&d, (uint32_t)n, "gateway", c->net_gw, sizeof(c->net_gw), false, err));
		TRY(get_text(&d, (uint32_t)n, "dns", c->net_dns, sizeof(c->net_dns), false, err));
		c->has_net = true;
	}
	return 0;
fail:
	config_free(c);
	return -EINVAL;
}
