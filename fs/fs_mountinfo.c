/*
 * fs_mountinfo.c - read /proc/self/mountinfo for the commands that find
 * a sixfold mount (fs_mountinfo.h).
 *
 * Layer: fs/, program support: no FUSE, no volume.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "fs/fs_mountinfo.h"

/* Undo mountinfo's octal escapes ("\040" for a space) in place. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 |
				      (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

int fs_mountinfo_each(int (*fn)(void *arg, const char *mountpoint,
				const char *type, const char *source),
		      void *arg)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[3 * PATH_MAX];
	int ret = 0;

	if (!f)
		return -errno;
	while (!ret && fgets(line, sizeof(line), f)) {
		char *sep = strstr(line, " - ");
		char mp[PATH_MAX], type[64], source[PATH_MAX];

		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1 ||
		    sscanf(sep + 3, "%63s %4095s", type, source) != 2)
			continue;
		unescape(mp);
		unescape(source);
		ret = fn(arg, mp, type, source);
	}
	fclose(f);
	return ret;
}

struct find {
	const char *path;
	char *src;
	size_t cap;
	int ret;
};

static int find_fn(void *arg, const char *mountpoint, const char *type,
		   const char *source)
{
	struct find *f = arg;

	if (strcmp(mountpoint, f->path))
		return 0;
	if (strcmp(type, FS_MOUNT_TYPE)) {
		f->ret = -EINVAL;
		return 0;
	}
	f->ret = snprintf(f->src, f->cap, "%s", source) < (int)f->cap ?
			 0 :
			 -ENAMETOOLONG;
	return 0;
}

int fs_mountinfo_source(const char *path, char *src, size_t cap)
{
	struct find f = { path, src, cap, -ENOENT };
	int ret = fs_mountinfo_each(find_fn, &f);

	return ret ? ret : f.ret;
}
