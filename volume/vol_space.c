/*
 * vol_space.c - admission of writes against the zones' free space.
 *
 * Layer: volume/.  The log is preallocated, so a commit itself never
 * needs space; its blocks need it later, when they are materialised into
 * the segment files.  A block that is acknowledged but cannot be
 * materialised would stall the volume, so space is checked before a
 * transaction takes its LSNs: a zone without room for it leaves the write
 * set (the others go on, DESIGN 6), and when fewer than W zones have room
 * the commit fails at once with -ENOSPC and nothing else changes.  A
 * caller that cannot take a refusal at commit (the filesystem, whose
 * tree has changed by then) gets room promised beforehand
 * (vol_txn_reserve), and its commit is then admitted.
 *
 * Invariant: every block written to the segments since a zone's reading
 * counts against that reading until the next (in unmat_blocks, then in
 * written_blocks); a block may count twice for a moment, never zero
 * times, so the zones never fill past the reserve by our own writes.
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
		uint64_t fs_id = zone->fs_id, bytes,
			 written = v->written_blocks;
		int n = 0;

		if (!zone->up || zone->free_fixed != UINT64_MAX)
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
		zone->read_written = written;
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
		vol_deadline(&ts, VOL_SPACE_REFRESH_MS);
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
	ret = vol_thread_start(&v->spacer, "sixfold-space", spacer, v);
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

/*
 * Caller holds v->lock.  Zone z's free bytes now, for each of the zones
 * on its file system: the last reading less what was admitted since
 * (free_bytes) and less what rounds wrote since it was taken.  Blocks
 * whose writes the reading already saw but which were still waiting
 * then count twice until the next reading: too little room for a
 * moment, never too much.
 */
static uint64_t room_of(const struct vol *v, int z)
{
	const struct vol_zone *zone = &v->zones[z];
	uint64_t n = sharers(v, z);
	uint64_t written = (v->written_blocks - zone->read_written) * n *
			   (VOL_BLOCK_BYTES + VOL_META_BYTES);

	return (zone->free_bytes > written ? zone->free_bytes - written : 0) /
	       n;
}

/* Caller holds v->lock.  A zone's reading predates blocks written since. */
static int readings_stale(const struct vol *v)
{
	for (int z = 0; z < VOL_ZONES; z++)
		if (v->zones[z].up &&
		    v->zones[z].read_written != v->written_blocks)
			return 1;
	return 0;
}

static int has_room(const struct vol *v, int z, uint64_t need)
{
	return v->zones[z].up && room_of(v, z) >= need;
}

#define FREE_WAIT_MS 10000 /* a delete waits this long for room */
#define STALE_WAIT_MS 300 /* a write, this long for a fresh reading */
#define WAIT_STEP_MS 100

/*
 * Caller holds v->lock.  Zones up with room for nwrite more blocks (and
 * their meta entries) on top of every block admitted and not yet
 * materialised and every block promised to an open transaction but t's
 * own promise (t may be NULL), and spare blocks besides (kept back for
 * checkpoints, tombstones and the superblock rewrites).
 */
static int zones_with_room(struct vol *v, const struct vol_txn *t,
			   uint32_t nwrite, uint64_t spare, uint64_t *need)
{
	uint64_t others = v->reserved_blocks - (t ? t->reserved : 0);
	int room = 0, up = 0;

	VOL_VERIFY(!t || t->reserved <= v->reserved_blocks);
	*need = (v->unmat_blocks + others + nwrite + spare) *
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

/*
 * The promise and the commit are separate steps, and between them the
 * spacer may read less free space than it did (a materialisation round
 * has written blocks it has not yet struck from unmat_blocks; DIRECT
 * blocks take their space at commit), and other commits (the
 * filesystem's overwrites, in parallel) take room.  Checking again at
 * commit would then refuse a transaction whose tree change is already
 * made, a sticky error for the filesystem: so the room is promised here
 * and counted against everyone else until the commit takes it.
 */
int vol_txn_reserve(struct vol_txn *t, uint32_t nwrite, int freeing)
{
	struct vol *v = t->v;
	uint64_t spare = (freeing ? 1 : 2) * VOL_SPACE_RESERVE_BLOCKS;
	uint64_t need;
	int ret = 0;

	pthread_mutex_lock(&v->lock);
	/*
	 * A delete is how a full volume gets its space back, so it does not
	 * give up while blocks wait to be materialised (they count against
	 * the room): it asks for a round and waits, up to FREE_WAIT_MS.
	 * Any step waits a little when a reading predates blocks written
	 * since (counted twice meanwhile, room_of): the next shows them once.
	 */
	for (uint64_t start = vol_now_ms(); !v->err;) {
		int waiting = freeing && v->unmat_blocks && !v->mat_stalled;
		uint64_t limit = waiting ? FREE_WAIT_MS : STALE_WAIT_MS;
		struct timespec ts;

		if (zones_with_room(v, t, nwrite, spare, &need) >=
		    VOL_WRITE_QUORUM)
			break;
		if ((!waiting && !readings_stale(v)) ||
		    vol_now_ms() - start >= limit) {
			ret = -ENOSPC;
			break;
		}
		if (waiting) {
			v->sync_req = 1;
			pthread_cond_broadcast(&v->mat_cv);
		}
		v->space_now = 1; /* statvfs again now */
		pthread_cond_broadcast(&v->space_cv);
		vol_deadline(&ts, WAIT_STEP_MS);
		/* a reading, or a round done, wakes it */
		pthread_cond_timedwait(&v->space_cv, &v->lock, &ts);
	}
	if (v->err)
		ret = v->err;
	if (!ret && v->space_refuse && --v->space_refuse == 0)
		ret = -ENOSPC;
	if (!ret) {
		v->reserved_blocks += (uint64_t)nwrite - t->reserved;
		t->reserved = nwrite;
	}
	pthread_mutex_unlock(&v->lock);
	return ret;
}

/* Caller holds v->lock.  t's promise, if any, ends. */
void vol_space_release(struct vol *v, struct vol_txn *t)
{
	VOL_VERIFY(t->reserved <= v->reserved_blocks);
	v->reserved_blocks -= t->reserved;
	t->reserved = 0;
}

/*
 * Caller holds v->lock.  Admit t's blocks as waiting to be materialised,
 * before it takes its LSNs: 0, or -ENOSPC when fewer than W zones have
 * room and t was promised less.  Zones without room leave the write set,
 * but only while W others have it: a promise kept on a reading that fell
 * must not take the quorum with it.
 */
int vol_space_admit(struct vol *v, struct vol_txn *t)
{
	uint32_t promised = t->reserved;
	uint64_t need;
	int room;

	vol_space_release(v, t);
	if (!t->nwrite)
		return 0;
	room = zones_with_room(v, NULL, t->nwrite, VOL_SPACE_RESERVE_BLOCKS,
			       &need);
	if (room < VOL_WRITE_QUORUM && t->nwrite > promised) {
		vol_log(VOL_LOG_ERR,
			"out of space: only %d zones have room for %u more "
			"blocks (4 needed); free space in the zones or discard "
			"blocks",
			room, t->nwrite);
		return -ENOSPC;
	}
	for (int z = 0; room >= VOL_WRITE_QUORUM && z < VOL_ZONES; z++)
		if (v->zones[z].up && !has_room(v, z, need))
			vol_zone_fail(v, z, -ENOSPC, "its file system is full");
	v->unmat_blocks += t->nwrite;
	for (int z = 0; z < VOL_ZONES; z++) {
		uint64_t used =
			(uint64_t)t->nwrite * VOL_BLOCK_BYTES * sharers(v, z);

		v->zones[z].free_bytes -= used < v->zones[z].free_bytes ?
						  used :
						  v->zones[z].free_bytes;
	}
	return 0;
}

int vol_debug_zone_space(struct vol *v, int zone, uint64_t bytes)
{
	if (zone < 0 || zone >= VOL_ZONES)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	v->zones[zone].free_fixed = bytes;
	if (bytes == UINT64_MAX) {
		refresh(v); /* in effect when this returns */
	} else {
		v->zones[zone].free_bytes = bytes;
		v->zones[zone].read_written = v->written_blocks;
	}
	pthread_mutex_unlock(&v->lock);
	return 0;
}

int vol_debug_space_refuse(struct vol *v, int n)
{
	int left;

	pthread_mutex_lock(&v->lock);
	left = v->space_refuse - 1;
	v->space_refuse = n < 0 ? 0 : n + 1;
	pthread_mutex_unlock(&v->lock);
	return left;
}
