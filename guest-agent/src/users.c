/* Resolve an OCI "user" string against the image's /etc/passwd and /etc/group.
 * We parse the files ourselves: static glibc's getpwnam() needs NSS modules
 * at run time, and musl's reads the same files anyway. */
#include "sm.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool parse_id(const char *s, uint32_t *out)
{
	if (!*s)
		return false;
	uint64_t v = 0;
	for (const char *p = s; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > 0xfffffffeu)
			return false;
	}
	*out = (uint32_t)v;
	return true;
}

/* Split a colon-separated line into at most max fields (in place). */
static int split_colon(char *line, char **f, int max)
{
	int n = 0;
	f[n++] = line;
	for (char *p = line; *p && n < max; p++) {
		if (*p == ':') {
			*p = 0;
			f[n++] = p + 1;
		}
	}
	char *nl = strchr(f[n - 1], '\n');
	if (nl)
		*nl = 0;
	return n;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, src, n);
	dst[n] = 0;
}

int resolve_user(const char *root, const char *spec, struct sm_user *u, struct sm_err *err)
{
	char path[256];
	char line[1024];
	char userpart[256], grouppart[256];
	memset(u, 0, sizeof(*u));
	copy_str(u->home, sizeof(u->home), "/");
	copy_str(u->name, sizeof(u->name), "");
	if (!spec || !*spec)
		spec = "0";
	const char *colon = strchr(spec, ':');
	if (colon) {
		size_t n = (size_t)(colon - spec);
		if (n >= sizeof(userpart) || strlen(colon + 1) >= sizeof(grouppart)) {
			sm_err_fmt(err, "EINVAL", "user %s: too long", spec);
			return -EINVAL;
		}
		memcpy(userpart, spec, n);
		userpart[n] = 0;
		copy_str(grouppart, sizeof(grouppart), colon + 1);
	} else {
		if (strlen(spec) >= sizeof(userpart)) {
			sm_err_fmt(err, "EINVAL", "user: too long");
			return -EINVAL;
		}
		copy_str(userpart, sizeof(userpart), spec);
		grouppart[0] = 0;
	}

	uint32_t uid = 0, gid0 = 0;
	bool numeric = parse_id(userpart, &uid);
	bool found = false;
	/* "uid:gid" both numeric needs neither file (the passwd entry's group is overridden and no
	 * supplementary groups are added when a group is given); it is the default of every exec. */
	bool both_numeric = numeric && grouppart[0] && parse_id(grouppart, &gid0);
	snprintf(path, sizeof(path), "%s/etc/passwd", root);
	FILE *f = both_numeric ? NULL : fopen(path, "re");
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			char *fl[7];
			if (line[0] == '#' || split_colon(line, fl, 7) < 7)
				continue;
			uint32_t pu, pg;
			if (!parse_id(fl[2], &pu) || !parse_id(fl[3], &pg))
				continue;
			if (numeric ? pu == uid : strcmp(fl[0], userpart) == 0) {
				u->uid = pu;
				u->gid = pg;
				copy_str(u->name, sizeof(u->name), fl[0]);
				copy_str(u->home, sizeof(u->home), *fl[5] ? fl[5] : "/");
				found = true;
				break;
			}
		}
		fclose(f);
	}
	if (!found) {
		if (!numeric) {
			sm_err_fmt(err, "EINVAL", "user %s not found in the image's /etc/passwd", userpart);
			return -ENOENT;
		}
		u->uid = uid;
		u->gid = 0;
	}

	uint32_t gid = 0;
	bool gnumeric = grouppart[0] && parse_id(grouppart, &gid);
	bool gfound = !grouppart[0] || gnumeric;
	if (gnumeric)
		u->gid = gid;
	u->ngroups = 0;
	/* With a numeric group the file can change nothing (no name to look up, and no supplementary
	 * groups when a group is given): skip reading it, it is on every exec's path. */
	snprintf(path, sizeof(path), "%s/etc/group", root);
	f = gnumeric ? NULL : fopen(path, "re");
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			char *fl[4];
			if (line[0] == '#' || split_colon(line, fl, 4) < 4)
				continue;
			uint32_t g;
			if (!parse_id(fl[2], &g))
				continue;
			if (grouppart[0] && !gnumeric && strcmp(fl[0], grouppart) == 0) {
				u->gid = g;
				gfound = true;
			}
			/* supplementary groups: only when no explicit group was given (docker semantics) */
			if (!grouppart[0] && u->name[0] && u->ngroups < SM_MAX_GROUPS) {
				char *save = NULL;
				for (char *m = strtok_r(fl[3], ",", &save); m; m = strtok_r(NULL, ",", &save)) {
					if (strcmp(m, u->name) == 0) {
						u->groups[u->ngroups++] = g;
						break;
					}
				}
			}
		}
		fclose(f);
	}
	if (!gfound) {
		sm_err_fmt(err, "EINVAL", "group %s not found in the image's /etc/group", grouppart);
		return -ENOENT;
	}
	/* the primary group is always part of the group list */
	bool have = false;
	for (int i = 0; i < u->ngroups; i++)
		have |= u->groups[i] == u->gid;
	if (!have && u->ngroups < SM_MAX_GROUPS)
		u->groups[u->ngroups++] = u->gid;
	return 0;
}
