/*
 * passfs.c - helpers of the test tools' FUSE passthroughs (passfs.h).
 */
#include "passfs.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *passfs_rel(const char *path)
{
	while (*path == '/')
		path++;
	return *path ? path : ".";
}

int passfs_readdir(DIR *d, void *buf, fuse_fill_dir_t fill, off_t off)
{
	struct dirent *de;

	if (off == 0)
		rewinddir(d);
	errno = 0;
	while ((de = readdir(d))) {
		struct stat st;

		memset(&st, 0, sizeof(st));
		st.st_ino = de->d_ino;
		st.st_mode = (mode_t)de->d_type << 12;
		if (fill(buf, de->d_name, &st, 0, 0))
			return 0; /* buffer full */
	}
	return errno ? -errno : 0;
}

int passfs_readlink(int dirfd, const char *path, char *buf, size_t size)
{
	ssize_t n;

	if (!size)
		return -EINVAL;
	n = readlinkat(dirfd, path, buf, size - 1);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	return 0;
}

int passfs_flush(int fd)
{
	int dup_fd = dup(fd);

	if (dup_fd < 0)
		return -errno;
	return close(dup_fd) ? -errno : 0;
}
