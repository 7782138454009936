/*
 * vol_mkfs.c - format six zones into a new volume.
 *
 * Layer: volume/.  Thin at any size: writes superblocks, key files, a
 * checkpoint and a zero-filled log per zone, nothing proportional to the
 * volume's size.  The superblock of each directory is written last, so a
 * half-formatted zone has none and is not mistaken for a volume.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "volume/vol_i.h"

static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

/*
 * The files of ours a zone directory may hold (removed by --force).  The
 * lock file stays: mkfs holds its lock while it destroys and formats, so
 * a volume in use is never reformatted under its owner.
 */
static const char *const zone_files[] = { "superblock", "keys",	 "checkpoint",
					  "log",	"scrub", NULL };

static int remove_tree(const char *dir, const char *sub)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
	return rmdir(path) ? -errno : 0;
}

/* A name sixfold itself puts in a zone directory (or its temporary). */
int vol_is_ours(const char *name)
{
	static const char *const ours[] = { "superblock", "keys",  "checkpoint",
					    "log",	  "lock",  "pg",
					    "wim",	  "scrub", "control",
					    NULL };
	size_t len = strlen(name);

	if (name[0] == '.' && len > 5 && !strcmp(name + len - 4, ".tmp")) {
		name++;
		len -= 5;
	}
	for (int i = 0; ours[i]; i++)
		if (strlen(ours[i]) == len && !strncmp(name, ours[i], len))
			return 1;
	return 0;
}

/*
 * What is in dir: 0 empty (or only a lock file: an mkfs that died right
 * after locking), 1 a sixfold zone (its superblock in *sb), 2 leftovers
 * of an mkfs that died before the superblock (only names of ours),
 * -ENOTEMPTY something else, -errno.
 */
static int probe_dir(const char *dir, struct vol_sb *sb)
{
	uint8_t *buf;
	char path[PATH_MAX];
	struct dirent *de;
	int entries = 0, foreign = 0, lock_only = 1, ret;
	DIR *d = opendir(dir);

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		entries++;
		foreign |= !vol_is_ours(de->d_name);
		lock_only &= !strcmp(de->d_name, "lock");
	}
	closedir(d);
	if (!entries || lock_only)
		return 0;
	if (snprintf(path, sizeof(path), "%s/superblock", dir) >=
	    (int)sizeof(path))
		return -ENAMETOOLONG;
	buf = malloc(VOL_SB_BYTES);
	if (!buf)
		return -ENOMEM;
	ret = vol_read_file(path, buf, VOL_SB_BYTES);
	if (!ret && !memcmp(buf, VOL_SB_MAGIC, 8) &&
	    !vol_sb_decode(buf, sb, path))
		ret = 1;
	else
		ret = foreign ? -ENOTEMPTY : 2;
	free(buf);
	return ret;
}

static void uuid_str(const uint8_t *u, char *s)
{
	for (int i = 0; i < KEY_UUID_BYTES; i++)
		sprintf(s + 2 * i, "%02x", u[i]);
}

/* Resolve, create and vet every directory; fill canonical specs. */
static int check_dirs(const struct vol_mkfs_opts *o, struct vol_zone *zones,
		      char specs[VOL_ZONES][VOL_PATH_MAX])
{
	dev_t dev[VOL_ZONES * VOL_ZONE_MAX_DIRS];
	ino_t ino[VOL_ZONES * VOL_ZONE_MAX_DIRS];
	int ndev = 0, ret;

	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_zone *zone = &zones[z];

		if (!o->zones[z] || !o->zones[z][0]) {
			vol_log(VOL_LOG_ERR, "mkfs needs exactly six zones");
			return -EINVAL;
		}
		zone->idx = z;
		ret = vol_zone_set_dirs(zone, o->zones[z]);
		if (ret) {
			vol_log(VOL_LOG_ERR,
				"zone %d: '%s' is not a list of 1 to 8 "
				"directories",
				z, o->zones[z]);
			return -EINVAL;
		}
		specs[z][0] = 0;
		for (int d = 0; d < zone->ndirs; d++) {
			char real[PATH_MAX];
			struct vol_sb sb;
			struct stat st;
			size_t len;

			ret = mkdir_p(zone->dirs[d]);
			if (ret || !realpath(zone->dirs[d], real) ||
			    stat(real, &st)) {
				ret = ret ? ret : -errno;
				vol_log(VOL_LOG_ERR, "cannot create %s: %s",
					zone->dirs[d], strerror(-ret));
				return ret;
			}
			for (int i = 0; i < ndev; i++)
				if (dev[i] == st.st_dev &&
				    ino[i] == st.st_ino) {
					vol_log(VOL_LOG_ERR,
						"%s is given twice: each "
						"zone directory must be "
						"distinct",
						real);
					return -EINVAL;
				}
			dev[ndev] = st.st_dev;
			ino[ndev++] = st.st_ino;
			ret = probe_dir(real, &sb);
			if (ret == -ENOTEMPTY) {
				vol_log(VOL_LOG_ERR,
					"%s is not empty and holds no sixfold "
					"zone: give an empty directory",
					real);
				return -EINVAL;
			}
			if (ret < 0)
				return ret;
			if (ret == 2 && !o->force) {
				vol_log(VOL_LOG_ERR,
					"%s holds the remains of an mkfs that "
					"did not finish; add --force to "
					"format over them",
					real);
				return -EEXIST;
			}
			if (ret == 1 && !o->force) {
				char u[2 * KEY_UUID_BYTES + 1];

				uuid_str(sb.uuid, u);
				vol_log(VOL_LOG_ERR,
					"%s already holds zone %u of sixfold "
					"volume %s; add --force to destroy it",
					real, sb.zone, u);
				return -EEXIST;
			}
			free(zone->dirs[d]);
			zone->dirs[d] = strdup(real);
			if (!zone->dirs[d])
				return -ENOMEM;
			len = strlen(specs[z]);
			if (snprintf(specs[z] + len, VOL_PATH_MAX - len, "%s%s",
				     d ? "," : "",
				     real) >= (int)(VOL_PATH_MAX - len)) {
				vol_log(VOL_LOG_ERR,
					"zone %d: directory names too long", z);
				return -ENAMETOOLONG;
			}
		}
	}
	return 0;
}

int vol_zone_wipe(const char *dir)
{
	char path[PATH_MAX];
	int ret;

	for (int i = 0; zone_files[i]; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, zone_files[i]);
		if (unlink(path) && errno != ENOENT)
			return -errno;
		snprintf(path, sizeof(path), "%s/.%s.tmp", dir, zone_files[i]);
		if (unlink(path) && errno != ENOENT)
			return -errno;
	}
	ret = remove_tree(dir, "pg");
	if (!ret)
		ret = remove_tree(dir, "wim");
	return ret;
}

static int write_log(const char *dir, uint32_t log_blocks)
{
	char path[PATH_MAX];
	uint8_t *zero = vol_alloc_blocks(256);
	int fd, ret = 0;

	if (!zero)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/log", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out_free;
	}
	/* Zero-filled, not fallocated: overwrites then never allocate. */
	for (uint32_t b = 0; b < log_blocks && !ret; b += 256) {
		size_t n = (log_blocks - b < 256 ? log_blocks - b : 256) *
			   (size_t)VOL_BLOCK_BYTES;

		ret = vol_write_result(
			pwrite(fd, zero, n, (off_t)b * VOL_BLOCK_BYTES), n);
	}
	if (!ret && fsync(fd))
		ret = -errno;
	close(fd);
out_free:
	free(zero);
	return ret;
}

int vol_zone_format(struct vol_zone *z, const struct vol_sb *tmpl,
		    const uint8_t *kf)
{
	uint8_t *buf = vol_alloc_blocks(2);
	struct vol_ckpt ck = { 0 };
	char path[PATH_MAX];
	int ret;

	if (!buf)
		return -ENOMEM;
	ret = write_log(z->dirs[0], (uint32_t)tmpl->log_blocks);
	if (ret)
		goto out_free;
	ck.zone = z->idx;
	memcpy(ck.uuid, tmpl->uuid, KEY_UUID_BYTES);
	ck.seq = 0;
	ck.epoch = tmpl->epoch;
	ck.pg_count = 1;
	vol_ck_encode(&ck, buf);
	ret = vol_write_file_atomic(z->dirs[0], "checkpoint", buf,
				    2 * VOL_CK_BYTES);
	if (!ret)
		ret = vol_write_file_atomic(z->dirs[0], "keys", kf,
					    VOL_KF_BYTES);
	snprintf(path, sizeof(path), "%s/wim", z->dirs[0]);
	if (!ret && mkdir(path, 0700) && errno != EEXIST)
		ret = -errno;
	for (int d = 0; d < z->ndirs && !ret; d++) {
		snprintf(path, sizeof(path), "%s/pg", z->dirs[d]);
		if (mkdir(path, 0700) && errno != EEXIST)
			ret = -errno;
	}
	if (ret)
		goto out_free;
	z->sb = *tmpl;
	z->sb.zone = z->idx;
	z->sb.ndirs = z->ndirs;
	z->sb.seq = 0;
	ret = vol_zone_write_sb(NULL, z); /* last: the zone now exists */
out_free:
	free(buf);
	return ret;
}

int vol_mkfs(const struct vol_mkfs_opts *o, uint8_t uuid_out[KEY_UUID_BYTES])
{
	struct vol_zone zones[VOL_ZONES];
	char specs[VOL_ZONES][VOL_PATH_MAX];
	uint8_t hdr[KEY_HEADER_BYTES];
	uint8_t *kf = malloc(VOL_KF_BYTES);
	struct key_master *mk = NULL;
	const char *where = "";
	struct vol_sb sb;
	int ret;

	memset(zones, 0, sizeof(zones));
	for (int z = 0; z < VOL_ZONES; z++) {
		zones[z].lock_fd = zones[z].log_fd = zones[z].ck_fd = -1;
		pthread_mutex_init(&zones[z].fd_lock, NULL);
	}
	if (!kf) {
		ret = -ENOMEM;
		goto out_release;
	}
	memset(&sb, 0, sizeof(sb));
	sb.max_blocks = o->max_blocks ? o->max_blocks : VOL_MAX_BLOCKS;
	sb.log_blocks = o->log_blocks ? o->log_blocks : VOL_LOG_DEFAULT_BLOCKS;
	if (sb.max_blocks > VOL_MAX_BLOCKS || sb.max_blocks < 1 ||
	    sb.log_blocks < VOL_LOG_MIN_BLOCKS ||
	    sb.log_blocks > VOL_LOG_MAX_BLOCKS) {
		vol_log(VOL_LOG_ERR,
			"maximum size must be 4 KiB to 64 TiB and the log 8 "
			"to 256 MiB");
		ret = -EINVAL;
		goto out_release;
	}
	ret = check_dirs(o, zones, specs);
	if (ret)
		goto out_release;
	ret = key_init();
	if (!ret)
		ret = key_master_create(&mk);
	if (ret)
		goto out_release;
	key_random(sb.uuid, KEY_UUID_BYTES);
	ret = key_header_create(hdr, sb.uuid, mk, o->key);
	if (ret) {
		vol_log(VOL_LOG_ERR, "cannot create the key slot: %s",
			strerror(-ret));
		goto out_release;
	}
	vol_kf_encode(kf, sb.uuid, 1, hdr);
	sb.epoch = 1;
	sb.epoch_lsn = 1;
	sb.created = (uint64_t)time(NULL);
	for (int z = 0; z < VOL_ZONES; z++)
		memcpy(sb.specs[z], specs[z], VOL_PATH_MAX);
	for (int z = 0; z < VOL_ZONES && !ret; z++) {
		where = zones[z].dirs[0];
		ret = vol_zone_lock(&zones[z], 1); /* names a holder */
	}
	for (int z = 0; z < VOL_ZONES && !ret; z++)
		for (int d = 0; d < zones[z].ndirs && !ret; d++) {
			where = zones[z].dirs[d];
			ret = vol_zone_wipe(where);
		}
	for (int z = 0; z < VOL_ZONES && !ret; z++) {
		where = zones[z].dirs[0];
		ret = vol_zone_format(&zones[z], &sb, kf);
	}
	if (ret) {
		vol_log(VOL_LOG_ERR,
			"cannot format zone directory %s: %s; check that it "
			"is writable (not read-only, not immutable) and has "
			"free space, then run mkfs again",
			where, strerror(-ret));
		goto out_release;
	}
	if (uuid_out)
		memcpy(uuid_out, sb.uuid, KEY_UUID_BYTES);
out_release:
	key_master_free(mk);
	free(kf);
	for (int z = 0; z < VOL_ZONES; z++)
		vol_zone_release(&zones[z], 0);
	return ret;
}
