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
 *
 * The zones' free space is read by a thread of its own (the spacer),
 * every VOL_SPACE_REFRESH_MS, never on the write path and never under
 * v->lock: statvfs of a slow or hung zone (a FUSE or network file system
 * whose threads are all busy) would otherwise stall every write.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "volume/vol_i.h"

/*
 * Free bytes of a zone whose directories are dirs[0..n): the least of
 * their file systems' (whose id, the first directory's, goes to *fs_id).
 * A directory that cannot be asked (a disk gone, a dead mount) does not
 * count as full: the zone's next I/O fails and names the real cause.
 */
static uint64_t dirs_free(char **dirs, int n, uint64_t *fs_id)
{
	uint64_t least = UINT64_MAX;

	for (int d = 0; d < n; d++) {
		struct statvfs st;

		if (statvfs(dirs[d], &st))
			continue;
		if (d == 0)
			*fs_id = st.f_fsid;
		if ((uint64_t)st.f_bavail * st.f_frsize < least)
			least = (uint64_t)st.f_bavail * st.f_frsize;
	}
	return least;
}

/* Caller holds v->lock (dropped while statvfs runs).  Read every zone's
 * free space once. */
static void refresh(struct vol *v)
{
	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_zone *zone = &v->zones[z];
		char *dirs[VOL_ZONE_MAX_DIRS];
		uint64_t fs_id = zone->fs_id, bytes;
		int n = 0;

		if (!zone->up)
			continue;
		for (int d = 0; d < zone->ndirs; d++) {
			dirs[n] = strdup(zone->dirs[d]);
			if (dirs[n])
				n++;
		}
		pthread_mutex_unlock(&v->lock);
		bytes = dirs_free(dirs, n, &fs_id);
		for (int d = 0; d < n; d++)
			free(dirs[d]);
		pthread_mutex_lock(&v->lock);
		zone->free_bytes = bytes;
		zone->fs_id = fs_id;
	}
	v->space_checked_ms = vol_now_ms();
	pthread_cond_broadcast(&v->space_cv);
}

static void *spacer(void *arg)
{
	struct vol *v = arg;

	pthread_mutex_lock(&v->lock);
	while (!v->space_stop) {
		struct timespec ts;

		refresh(v);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += VOL_SPACE_REFRESH_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (!v->space_stop && !v->space_now)
			pthread_cond_timedwait(&v->space_cv, &v->lock, &ts);
		v->space_now = 0;
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

/* First reading now, then the spacer keeps it fresh. */
int vol_space_start(struct vol *v)
{
	int ret;

	pthread_mutex_lock(&v->lock);
	refresh(v);
	pthread_mutex_unlock(&v->lock);
	ret = vol_thread_start(&v->spacer, spacer, v);
	if (!ret)
		v->spacer_on = 1;
	return ret;
}

void vol_space_stop(struct vol *v)
{
	if (!v->spacer_on)
		return;
	pthread_mutex_lock(&v->lock);
	v->space_stop = 1;
	pthread_cond_broadcast(&v->space_cv);
	pthread_mutex_unlock(&v->lock);
	pthread_join(v->spacer, NULL);
	v->spacer_on = 0;
}

/*
 * Zones up on zone z's file system, z included.  Six zone folders on one
 * disk (a demo, a test) draw on the same free bytes: every block costs
 * that file system one copy per zone on it.
 */
static uint64_t sharers(const struct vol *v, int z)
{
	uint64_t n = 0;

	for (int o = 0; o < VOL_ZONES; o++)
		n += v->zones[o].up && v->zones[o].fs_id == v->zones[z].fs_id;
	return n ? n : 1;
}

static int has_room(const struct vol *v, int z, uint64_t need)
{
	return v->zones[z].up && v->zones[z].free_bytes / sharers(v, z) >= need;
}

/*
 * Caller holds v->lock.  Room for nwrite more blocks (and their meta
 * entries) on top of what is waiting to be materialised, with
 * VOL_SPACE_RESERVE_BLOCKS kept back for checkpoints, tombstones and the
 * superblock rewrites.  Returns 0 (the blocks are then counted as
 * waiting) or -ENOSPC.
 */
#define FREE_WAIT_MS 10000 /* a delete waits this long for room */
#define FREE_WAIT_STEP_MS 100

/* Caller holds v->lock.  Zones up with room for nwrite more blocks on
 * top of what waits, and spare blocks besides. */
static int zones_with_room(struct vol *v, uint32_t nwrite, uint64_t spare,
			   uint64_t *need)
{
	int room = 0, up = 0;

	*need = (v->unmat_blocks + nwrite + spare) *
		(VOL_BLOCK_BYTES + VOL_META_BYTES);
	for (int z = 0; z < VOL_ZONES; z++) {
		room += has_room(v, z, *need);
		up += v->zones[z].up;
	}
	/*
	 * Fewer than W zones in the write set is a lost quorum, not a full
	 * volume: the write waits for zones to come back (DESIGN 6), and is
	 * admitted against their space then, at materialisation.
	 */
	return up < VOL_WRITE_QUORUM ? VOL_WRITE_QUORUM : room;
}

int vol_space_check(struct vol *v, uint32_t nwrite, int freeing)
{
	uint64_t spare = (freeing ? 1 : 2) * VOL_SPACE_RESERVE_BLOCKS;
	uint64_t need;
	int ret = 0;

	pthread_mutex_lock(&v->lock);
	/*
	 * A delete is how a full volume gets its space back, so it does not
	 * give up while blocks wait to be materialised (they count against
	 * the room): it asks for a round and waits, up to FREE_WAIT_MS.
	 */
	for (int i = 0; !v->err; i++) {
		struct timespec ts;

		if (zones_with_room(v, nwrite, spare, &need) >=
		    VOL_WRITE_QUORUM)
			break;
		if (!freeing || !v->unmat_blocks || v->mat_stalled ||
		    i * FREE_WAIT_STEP_MS >= FREE_WAIT_MS) {
			ret = -ENOSPC;
			break;
		}
		v->sync_req = 1;
		v->space_now = 1; /* statvfs again now */
		pthread_cond_broadcast(&v->space_cv);
		pthread_cond_broadcast(&v->mat_cv);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += FREE_WAIT_STEP_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&v->idle_cv, &v->lock, &ts);
	}
	if (v->err)
		ret = v->err;
	pthread_mutex_unlock(&v->lock);
	return ret;
}

int vol_space_admit(struct vol *v, uint32_t nwrite)
{
	uint64_t need;
	int room;

	if (!nwrite)
		return 0;
	room = zones_with_room(v, nwrite, VOL_SPACE_RESERVE_BLOCKS, &need);
	if (room < VOL_WRITE_QUORUM) {
		vol_log(VOL_LOG_ERR,
			"out of space: only %d zones have room for %u more "
			"blocks (4 needed); free space in the zones or discard "
			"blocks",
			room, nwrite);
		return -ENOSPC;
	}
	for (int z = 0; z < VOL_ZONES; z++)
		if (v->zones[z].up && !has_room(v, z, need))
			vol_zone_fail(v, z, -ENOSPC, "its file system is full");
	v->unmat_blocks += nwrite;
	for (int z = 0; z < VOL_ZONES; z++) {
		uint64_t used =
			(uint64_t)nwrite * VOL_BLOCK_BYTES * sharers(v, z);

		v->zones[z].free_bytes -= used < v->zones[z].free_bytes ?
						  used :
						  v->zones[z].free_bytes;
	}
	return 0;
}
