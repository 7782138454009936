/*
 * vol_space.c - admission of writes against the zones' free space.
 *
 * Layer: volume/.  The log is preallocated, so a commit itself never
 * needs space; its blocks need it later, when they are materialised into
 * the segment files.  A block that is acknowledged but cannot be
 * materialised would stall the volume, so space is checked before a
 * transaction takes its LSNs: a zone without room for it leaves the write
 * set (the others go on, DESIGN 6), and when fewer than W zones have room
 * the commit fails at once with -ENOSPC and nothing else changes.
 */
#include <errno.h>
#include <sys/statvfs.h>
#include <time.h>

#include "volume/vol_i.h"

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Free bytes of the zone: the least of its directories' file systems. */
static uint64_t zone_free(const struct vol_zone *z)
{
	uint64_t least = UINT64_MAX;

	for (int d = 0; d < z->ndirs; d++) {
		struct statvfs st;

		if (statvfs(z->dirs[d], &st))
			return 0;
		if ((uint64_t)st.f_bavail * st.f_frsize < least)
			least = (uint64_t)st.f_bavail * st.f_frsize;
	}
	return least;
}

/*
 * Caller holds v->lock.  Room for nwrite more blocks (and their meta
 * entries) on top of what is waiting to be materialised, with
 * VOL_SPACE_RESERVE_BLOCKS kept back for checkpoints, tombstones and the
 * superblock rewrites.  Returns 0 (the blocks are then counted as
 * waiting) or -ENOSPC.
 */
int vol_space_admit(struct vol *v, uint32_t nwrite)
{
	uint64_t need, t = now_ms();
	int room = 0;

	if (!nwrite)
		return 0;
	if (t - v->space_checked_ms >= VOL_SPACE_REFRESH_MS) {
		for (int z = 0; z < VOL_ZONES; z++)
			if (v->zones[z].up)
				v->zones[z].free_bytes =
					zone_free(&v->zones[z]);
		v->space_checked_ms = t;
	}
	need = (v->unmat_blocks + nwrite + VOL_SPACE_RESERVE_BLOCKS) *
	       (VOL_BLOCK_BYTES + VOL_META_BYTES);
	for (int z = 0; z < VOL_ZONES; z++)
		room += v->zones[z].up && v->zones[z].free_bytes >= need;
	if (room < VOL_WRITE_QUORUM) {
		vol_log(VOL_LOG_ERR,
			"out of space: only %d zones have room for %u more "
			"blocks (4 needed); free space in the zones or discard "
			"blocks",
			room, nwrite);
		return -ENOSPC;
	}
	for (int z = 0; z < VOL_ZONES; z++)
		if (v->zones[z].up && v->zones[z].free_bytes < need)
			vol_zone_fail(v, z, -ENOSPC, "its file system is full");
	v->unmat_blocks += nwrite;
	for (int z = 0; z < VOL_ZONES; z++)
		if (v->zones[z].free_bytes >=
		    (uint64_t)nwrite * VOL_BLOCK_BYTES)
			v->zones[z].free_bytes -=
				(uint64_t)nwrite * VOL_BLOCK_BYTES;
	return 0;
}
