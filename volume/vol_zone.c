/*
 * vol_zone.c - one zone on disk: its directories, lock, superblocks,
 * checkpoint, key file and segment files.
 *
 * Layer: volume/.  Blocking file-system calls only (no io_uring): these
 * run at open, close and for lazily opened segment files.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/stat.h>
#include <unistd.h>

#include "volume/vol_i.h"

/*
 * nblocks block-aligned blocks, not zeroed: for a caller that fills all
 * of them at once (a txn's plaintext and sealed blocks, vol_log.c).
 */
void *vol_alloc_blocks_raw(size_t nblocks)
{
	void *p = NULL;

	if (posix_memalign(&p, VOL_BLOCK_BYTES, nblocks * VOL_BLOCK_BYTES))
		return NULL;
	return p;
}

void *vol_alloc_blocks(size_t nblocks)
{
	void *p = vol_alloc_blocks_raw(nblocks);

	if (p)
		memset(p, 0, nblocks * VOL_BLOCK_BYTES);
	return p;
}

static atomic_int huge_refused; /* vol_alloc_huge said so once */

/*
 * nbytes (whole blocks) of zeroed memory for one large O_DIRECT write,
 * on transparent huge pages when the kernel gives them.  Why: a request
 * carries its memory to the disk as separate pieces (up to max_segments,
 * 254 on virtio), one per 4 KiB page unless pages are contiguous, and on
 * a virtual disk the pieces cost, not only the requests: from huge
 * pages a 1 GiB sequential write ran at twice the speed, in as many
 * requests.  The buffer starts on a huge page's boundary and ends at
 * nbytes: its last partial huge page has small pages, so no memory is
 * rounded up.  Where the kernel has no huge page to give (THP off,
 * memory fragmented), it is only slower.  A buffer too small for a huge
 * page comes from vol_alloc_blocks.  Freed by vol_free_huge with the
 * same nbytes; NULL when out of memory.
 */
void *vol_alloc_huge(size_t nbytes)
{
	size_t span = nbytes + VOL_HUGE_BYTES;
	uintptr_t at, head;
	uint8_t *p;

	if (nbytes < VOL_HUGE_BYTES)
		return vol_alloc_blocks(nbytes / VOL_BLOCK_BYTES);
	p = mmap(NULL, span, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* Over-mapped: trim to nbytes from a huge page's boundary. */
	at = ((uintptr_t)p + VOL_HUGE_BYTES - 1) &
	     ~(uintptr_t)(VOL_HUGE_BYTES - 1);
	head = at - (uintptr_t)p;
	VOL_VERIFY(head == 0 || munmap(p, head) == 0);
	VOL_VERIFY(munmap((uint8_t *)at + nbytes, span - head - nbytes) == 0);
	/*
	 * Refused (THP compiled out: EINVAL; no memory to split the mapping:
	 * ENOMEM, EAGAIN), the buffer keeps small pages: slower, not wrong.
	 * Said once per process, since it would repeat for every batch.
	 */
	if (madvise((void *)at, nbytes, MADV_HUGEPAGE) &&
	    !atomic_exchange(&huge_refused, 1))
		vol_log(VOL_LOG_INFO,
			"huge pages refused for write buffers (%s): large "
			"writes go out from 4 KiB pages, which is slower",
			strerror(errno));
	return (void *)at;
}

/* p from vol_alloc_huge(nbytes), or NULL (nothing to free). */
void vol_free_huge(void *p, size_t nbytes)
{
	if (nbytes < VOL_HUGE_BYTES)
		free(p);
	else if (p)
		VOL_VERIFY(munmap(p, nbytes) == 0);
}

/* Split "dir[,dir...]" into absolute directory names. */
int vol_zone_set_dirs(struct vol_zone *z, const char *spec)
{
	char buf[VOL_PATH_MAX];
	char *save = NULL;
	char *tok;

	if (strlen(spec) >= VOL_PATH_MAX)
		return -ENAMETOOLONG;
	snprintf(z->spec, sizeof(z->spec), "%s", spec);
	snprintf(buf, sizeof(buf), "%s", spec);
	z->ndirs = 0;
	for (tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (z->ndirs == VOL_ZONE_MAX_DIRS)
			return -E2BIG;
		z->dirs[z->ndirs] = strdup(tok);
		if (!z->dirs[z->ndirs])
			return -ENOMEM;
		z->ndirs++;
	}
	return z->ndirs ? 0 : -EINVAL;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		ret = -errno;
	close(fd);
	return ret;
}

/* Replace dir/name with buf: write a temporary, fsync, rename, fsync. */
int vol_write_file_atomic(const char *dir, const char *name, const void *buf,
			  size_t len)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	int fd, ret = 0;

	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	snprintf(dst, sizeof(dst), "%s/%s", dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	ret = vol_write_result(pwrite(fd, buf, len, 0), len);
	if (!ret && fsync(fd))
		ret = -errno;
	if (close(fd) && !ret)
		ret = -errno;
	if (ret)
		goto out_unlink;
	if (rename(tmp, dst)) {
		ret = -errno;
		goto out_unlink;
	}
	return fsync_dir(dir);
out_unlink:
	unlink(tmp);
	return ret;
}

int vol_read_file(const char *path, void *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	int ret = 0;

	if (fd < 0)
		return -errno;
	n = pread(fd, buf, len, 0);
	if (n < 0)
		ret = -errno;
	else if ((size_t)n != len)
		ret = -EUCLEAN;
	close(fd);
	return ret;
}

/*
 * Take the zone's exclusive lock.  On conflict, -EBUSY after logging who
 * holds it (the holder writes "pid N on HOST since TIME" into the file).
 */
int vol_zone_lock(struct vol_zone *z, int create)
{
	char path[PATH_MAX], who[200], host[64];
	ssize_t n;
	int fd, ret;

	snprintf(path, sizeof(path), "%s/lock", z->dirs[0]);
	fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		ret = errno == EWOULDBLOCK ? -EBUSY : -errno;

		n = pread(fd, who, sizeof(who) - 1, 0);
		who[n > 0 ? n : 0] = 0;
		who[strcspn(who, "\n")] = 0;
		if (ret == -EBUSY)
			vol_log(VOL_LOG_ERR,
				"zone %s is in use by another sixfold process "
				"(%s); unmount it or stop that process first",
				z->dirs[0], n > 0 ? who : "holder unknown");
		close(fd);
		return ret;
	}
	if (gethostname(host, sizeof(host)))
		snprintf(host, sizeof(host), "unknown");
	host[sizeof(host) - 1] = 0;
	n = snprintf(who, sizeof(who), "pid %ld on %s since %ld\n",
		     (long)getpid(), host, (long)time(NULL));
	ret = ftruncate(fd, 0) ? -errno : 0;
	if (!ret)
		ret = vol_write_result(pwrite(fd, who, (size_t)n, 0),
				       (size_t)n);
	if (ret) {
		close(fd);
		return ret;
	}
	z->lock_fd = fd;
	return 0;
}

/* Read and check the superblocks of every directory of the zone. */
int vol_zone_read_sb(struct vol_zone *z, const uint8_t *uuid)
{
	uint8_t *buf = malloc(VOL_SB_BYTES);
	char path[PATH_MAX];
	struct vol_sb sb;
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	for (int d = 0; d < z->ndirs; d++) {
		snprintf(path, sizeof(path), "%s/superblock", z->dirs[d]);
		ret = vol_read_file(path, buf, VOL_SB_BYTES);
		if (ret == -EUCLEAN)
			ret = VOL_CORRUPT(path, "superblock truncated");
		if (!ret)
			ret = vol_sb_decode(buf, &sb, path);
		if (ret)
			break;
		if (memcmp(sb.uuid, uuid, KEY_UUID_BYTES) ||
		    sb.zone != (uint32_t)z->idx || sb.dir != (uint32_t)d ||
		    sb.ndirs != (uint32_t)z->ndirs) {
			vol_log(VOL_LOG_WARN,
				"%s belongs to another volume or zone "
				"(zone %u dir %u)",
				path, sb.zone, sb.dir);
			ret = -EXDEV;
			break;
		}
		/* The newest epoch of the zone's directories speaks. */
		if (d == 0 || sb.epoch > z->sb.epoch)
			z->sb = sb;
	}
	free(buf);
	return ret;
}

int vol_zone_read_ckpt(struct vol_zone *z)
{
	uint8_t *buf = malloc(2 * VOL_CK_BYTES);
	struct vol_ckpt ck[2];
	int ok[2], ret = 0;
	ssize_t n;

	if (!buf)
		return -ENOMEM;
	n = pread(z->ck_fd, buf, 2 * VOL_CK_BYTES, 0);
	if (n < 0) {
		ret = -errno;
		goto out_free;
	}
	if (n < 2 * VOL_CK_BYTES)
		memset(buf + n, 0, 2 * VOL_CK_BYTES - n);
	for (int i = 0; i < 2; i++)
		ok[i] = !vol_ck_decode(buf + i * VOL_CK_BYTES, &ck[i]) &&
			ck[i].zone == (uint32_t)z->idx &&
			!memcmp(ck[i].uuid, z->sb.uuid, KEY_UUID_BYTES);
	if (!ok[0] && !ok[1]) {
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/checkpoint", z->dirs[0]);
		ret = VOL_CORRUPT(path, "no valid checkpoint slot");
	} else if (ok[0] && (!ok[1] || ck[0].seq > ck[1].seq)) {
		z->ck = ck[0];
	} else {
		z->ck = ck[1];
	}
out_free:
	free(buf);
	return ret;
}

/* Rewrite the superblock of every directory of the zone (seq + 1). */
int vol_zone_write_sb(struct vol *v, struct vol_zone *z)
{
	uint8_t *buf = malloc(VOL_SB_BYTES);
	int ret = 0;

	(void)v;
	if (!buf)
		return -ENOMEM;
	z->sb.seq++;
	for (int d = 0; d < z->ndirs && !ret; d++) {
		struct vol_sb sb = z->sb;

		sb.dir = d;
		vol_sb_encode(&sb, buf);
		ret = vol_write_file_atomic(z->dirs[d], "superblock", buf,
					    VOL_SB_BYTES);
	}
	free(buf);
	return ret;
}

/* Caller holds fd_lock: close the least recently used idle PG. */
static void pgfd_evict(struct vol *v, struct vol_zone *z)
{
	uint64_t victim = UINT64_MAX, oldest = UINT64_MAX;

	for (uint64_t i = 0; i < v->max_pgs; i++)
		if (z->pg[i].seg >= 0 && !z->pg[i].refs &&
		    z->pg[i].used < oldest) {
			oldest = z->pg[i].used;
			victim = i;
		}
	if (victim == UINT64_MAX)
		return; /* all busy: go over the bound for now */
	close(z->pg[victim].seg);
	close(z->pg[victim].meta);
	z->pg[victim].seg = z->pg[victim].meta = -1;
	z->pg_open--;
}

static int pgfd_open(struct vol_zone *z, uint64_t pg, int create)
{
	const char *dir = z->dirs[pg % z->ndirs];
	char path[PATH_MAX];
	int fl = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0);
	struct statfs sf;

	/*
	 * pg/ itself is made at format only: a directory that replaced the
	 * zone's under a running volume must not get one (it is then still
	 * empty, and rebuilt into).
	 */
	snprintf(path, sizeof(path), "%s/pg/%05llu.seg", dir,
		 (unsigned long long)pg);
	z->pg[pg].seg = open(path, fl | O_DIRECT, 0600);
	if (z->pg[pg].seg < 0)
		return -errno;
	snprintf(path, sizeof(path), "%s/pg/%05llu.meta", dir,
		 (unsigned long long)pg);
	z->pg[pg].meta = open(path, fl, 0600);
	if (z->pg[pg].meta < 0) {
		int ret = -errno;

		close(z->pg[pg].seg);
		z->pg[pg].seg = -1;
		return ret;
	}
	/*
	 * ext4 and XFS answer a non-blocking buffered read from the page
	 * cache or give it back; FUSE and network file systems may block
	 * in it whatever the flag says.
	 */
	z->pg[pg].meta_nowait =
		!fstatfs(z->pg[pg].meta, &sf) &&
		(sf.f_type == EXT4_SUPER_MAGIC || sf.f_type == XFS_SUPER_MAGIC);
	z->pg_open++;
	return 0;
}

/*
 * The segment and meta files of protection group pg, opened on first use
 * and held (refs) until vol_zone_pgfd_put.  create = 0 and no file yet:
 * -ENOENT (a read of a never-written PG).
 */
int vol_zone_pgfd(struct vol *v, struct vol_zone *z, uint64_t pg, int create,
		  struct vol_pgfd *out)
{
	int ret = 0;

	if (pg >= v->max_pgs)
		return -ENOSPC;
	pthread_mutex_lock(&z->fd_lock);
	if (z->pg[pg].seg < 0) {
		if (z->pg_open >= VOL_PGFD_MAX)
			pgfd_evict(v, z);
		ret = pgfd_open(z, pg, create);
	}
	if (!ret) {
		z->pg[pg].refs++;
		z->pg[pg].used = ++z->pg_clock;
		*out = z->pg[pg];
	}
	pthread_mutex_unlock(&z->fd_lock);
	return ret;
}

void vol_zone_pgfd_put(struct vol_zone *z, uint64_t pg)
{
	pthread_mutex_lock(&z->fd_lock);
	VOL_VERIFY(z->pg[pg].refs > 0);
	z->pg[pg].refs--;
	pthread_mutex_unlock(&z->fd_lock);
}

void vol_zone_release(struct vol_zone *z, uint64_t max_pgs)
{
	if (z->pg) {
		for (uint64_t i = 0; i < max_pgs; i++) {
			if (z->pg[i].seg >= 0)
				close(z->pg[i].seg);
			if (z->pg[i].meta >= 0)
				close(z->pg[i].meta);
		}
		free(z->pg);
		z->pg = NULL;
	}
	if (z->log_fd >= 0)
		close(z->log_fd);
	if (z->ck_fd >= 0)
		close(z->ck_fd);
	if (z->lock_fd >= 0)
		close(z->lock_fd); /* drops the flock */
	z->log_fd = z->ck_fd = z->lock_fd = -1;
	for (int d = 0; d < z->ndirs; d++) {
		free(z->dirs[d]);
		z->dirs[d] = NULL;
	}
	z->ndirs = 0;
	vol_wim_release(z);
	pthread_mutex_destroy(&z->fd_lock);
}

/*
 * Turn what the user typed into six zone specs.  One path: a zone
 * directory whose superblock names all six.  Six: the specs themselves
 * (their superblocks must agree on the UUID, checked at attach).
 */
int vol_resolve_specs(const char *const *paths, int npaths,
		      char specs[VOL_ZONES][VOL_PATH_MAX],
		      uint8_t uuid[KEY_UUID_BYTES])
{
	uint8_t *buf;
	char path[PATH_MAX];
	struct vol_sb sb;
	int ret;

	if (npaths != 1 && npaths != VOL_ZONES) {
		vol_log(VOL_LOG_ERR,
			"a volume is named by one zone directory or by all "
			"six zones, not %d paths",
			npaths);
		return -EINVAL;
	}
	buf = malloc(VOL_SB_BYTES);
	if (!buf)
		return -ENOMEM;
	ret = -ENOENT;
	/* The first superblock that reads names the volume. */
	for (int i = 0; i < npaths && ret; i++) {
		char first[VOL_PATH_MAX];

		snprintf(first, sizeof(first), "%s", paths[i]);
		first[strcspn(first, ",")] = 0;
		snprintf(path, sizeof(path), "%s/superblock", first);
		ret = vol_read_file(path, buf, VOL_SB_BYTES);
		if (!ret)
			ret = vol_sb_decode(buf, &sb, path);
	}
	free(buf);
	if (ret) {
		vol_log(VOL_LOG_ERR,
			"%s is not a sixfold zone (no readable superblock); "
			"give a zone directory made by 'sixfold mkfs'",
			paths[0]);
		return ret == -ENOENT ? -ENOENT : -EUCLEAN;
	}
	memcpy(uuid, sb.uuid, KEY_UUID_BYTES);
	for (int z = 0; z < VOL_ZONES; z++)
		snprintf(specs[z], VOL_PATH_MAX, "%s",
			 npaths == VOL_ZONES ? paths[z] : sb.specs[z]);
	return 0;
}

/*
 * Find the key.  Candidates are the intact key files (CRC good) with the
 * highest generation; older generations are never tried, so a slot that
 * a key change removed cannot come back through a stale zone.  One
 * intact newest copy of six is enough.  src == NULL only fetches the
 * header.  *gen gets the generation.  Returns the slot that unlocked
 * (0 when src is NULL); -EKEYREJECTED: valid header, wrong secret.
 */
int vol_unlock_key(struct vol_zone *zones, const uint8_t *uuid,
		   const struct key_source *src, struct key_master **mk,
		   uint8_t *hdr, uint64_t *gen)
{
	uint8_t *buf = malloc(VOL_KF_BYTES);
	uint8_t *hdrs = malloc((size_t)VOL_ZONES * KEY_HEADER_BYTES);
	uint64_t g[VOL_ZONES], best = 0;
	int have[VOL_ZONES] = { 0 }, any = 0, ret = -ENOENT;
	char path[PATH_MAX];

	if (!buf || !hdrs) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (int z = 0; z < VOL_ZONES; z++) {
		if (!zones[z].reachable)
			continue;
		snprintf(path, sizeof(path), "%s/keys", zones[z].dirs[0]);
		if (vol_read_file(path, buf, VOL_KF_BYTES))
			continue;
		have[z] = !vol_kf_decode(buf, uuid, &g[z],
					 hdrs + z * KEY_HEADER_BYTES, path);
		if (have[z] && (!any || g[z] > best))
			best = g[z];
		any |= have[z];
	}
	for (int z = 0; z < VOL_ZONES && ret < 0; z++) {
		int r, seen = 0;

		if (!have[z] || g[z] != best)
			continue;
		/* A copy equal to one tried already would only run the
		 * key derivation again (a wrong passphrase once cost six). */
		for (int o = 0; o < z && !seen; o++)
			seen = have[o] && g[o] == best &&
			       !memcmp(hdrs + o * KEY_HEADER_BYTES,
				       hdrs + z * KEY_HEADER_BYTES,
				       KEY_HEADER_BYTES);
		if (seen)
			continue;
		r = src ? key_header_unlock(hdrs + z * KEY_HEADER_BYTES, uuid,
					    src, mk) :
			  0;
		if (r >= 0) {
			memcpy(hdr, hdrs + z * KEY_HEADER_BYTES,
			       KEY_HEADER_BYTES);
			*gen = best;
			ret = r; /* the slot that opened */
		} else if (r == -EKEYREJECTED || ret == -ENOENT) {
			ret = r;
		}
	}
	if (!any)
		vol_log(VOL_LOG_ERR,
			"no intact key header in any reachable zone");
out_free:
	free(buf);
	free(hdrs);
	return ret;
}

/*
 * L1: may one device cache flush stand for this zone's log fdatasync?
 * Yes when (a) the log lives on ext4 or XFS, whose fdatasync always ends
 * in a cache flush of the whole device (even with no metadata to
 * commit), and (b) every byte of the log is an allocated, written,
 * unshared extent, so an O_DIRECT overwrite changes no metadata that a
 * journal commit would have to make stable: the data, once the device
 * acknowledged it, is stable after any later flush of that device.
 * mkfs and rebuild write the log with zeros for this.  A log with a hole,
 * an unwritten or shared (reflinked) extent, or on another file system
 * (FUSE, NFS, btrfs, tmpfs) keeps its own fdatasync.
 */
void vol_zone_flush_domain(struct vol_zone *z)
{
	enum { EXTENTS = 32 };
	union {
		struct fiemap fm;
		uint8_t raw[sizeof(struct fiemap) +
			    EXTENTS * sizeof(struct fiemap_extent)];
	} u;
	const uint32_t bad = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
			     FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_UNWRITTEN |
			     FIEMAP_EXTENT_SHARED | FIEMAP_EXTENT_DATA_INLINE |
			     FIEMAP_EXTENT_DATA_TAIL |
			     FIEMAP_EXTENT_NOT_ALIGNED;
	struct statfs sf;
	struct stat st;
	uint64_t covered = 0;

	z->flush_dev = 0;
	if (fstat(z->log_fd, &st) || fstatfs(z->log_fd, &sf))
		return;
	if (sf.f_type != EXT4_SUPER_MAGIC && sf.f_type != XFS_SUPER_MAGIC)
		return;
	while (covered < (uint64_t)st.st_size) {
		struct fiemap_extent *last;

		memset(&u, 0, sizeof(u));
		u.fm.fm_start = covered;
		u.fm.fm_length = (uint64_t)st.st_size - covered;
		u.fm.fm_flags = FIEMAP_FLAG_SYNC;
		u.fm.fm_extent_count = EXTENTS;
		if (ioctl(z->log_fd, FS_IOC_FIEMAP, &u.fm) ||
		    !u.fm.fm_mapped_extents)
			return;
		for (uint32_t i = 0; i < u.fm.fm_mapped_extents; i++) {
			const struct fiemap_extent *e = &u.fm.fm_extents[i];

			if (e->fe_logical != covered || (e->fe_flags & bad))
				return; /* a hole, or not plain data */
			covered += e->fe_length;
		}
		last = &u.fm.fm_extents[u.fm.fm_mapped_extents - 1];
		if ((last->fe_flags & FIEMAP_EXTENT_LAST) &&
		    covered < (uint64_t)st.st_size)
			return;
	}
	z->flush_dev = (uint64_t)st.st_dev + 1;
}
