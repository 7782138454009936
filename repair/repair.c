/*
 * repair.c - the repair thread of a mounted volume: it watches the
 * zones, resyncs and rebuilds them, heals what reads found, and scrubs.
 *
 * Layer: repair/ (above volume/).  One thread per mounted volume does
 * all the volume's repair calls (they are not reentrant among
 * themselves); the control channel's thread only sets requests here and
 * waits for their answer.
 *
 * Priorities, each turn of the loop (at most REPAIR_TURN_MS long, so a
 * request is never kept waiting long):
 *   1. requests (zone replace) and the zone watch (every second);
 *   2. blocks that reads found bad: healed at once;
 *   3. resync and rebuild: redundancy first, not rate-limited (they copy
 *      only what is missing, and writes keep their quorum of the others);
 *   4. the scrub, paced to its rate so foreground I/O keeps priority.
 *      The record (cursor and counts) is stored in the zones every few
 *      seconds: after a remount a running scrub goes on where it was.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "repair/repair.h"

#define REPAIR_TURN_MS 100
#define REPAIR_PROBE_MS 1000
#define REPAIR_SAVE_MS 5000
/* A scrub someone asked for runs at least this fast (MB/s). */
#define REPAIR_DEMAND_RATE 64
/* The first background scrub of a volume that never had one waits. */
#define REPAIR_FIRST_SCRUB_S 3600
#define REPAIR_INTERVAL_DEFAULT_S (7 * 86400)

enum { REQ_NONE, REQ_REPLACE };

struct repair {
	struct vol *v;
	struct repair_opts o;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cv; /* wakes the thread */
	pthread_cond_t done_cv; /* a request was answered */
	/* Protected by lock: */
	int stopping;
	int req;
	int req_zone;
	char req_dir[VOL_PATH_MAX];
	int req_ret;
	int scrub_changed; /* the record is to be stored */
	int scrub_demand; /* the running scrub was asked for */
	int scrub_synced; /* its vol_sync is done (scrub_turn) */
	struct vol_scrub_rec scrub; /* current or last */
	uint32_t nlost;
	struct repair_lost lost[REPAIR_MAX_LOST];
	uint64_t zone_rate[VOL_ZONES];
	uint64_t zone_eta[VOL_ZONES];
	/* Thread only: */
	uint64_t mounted_s;
	uint64_t repaired[VOL_ZONES]; /* repaired_blocks at rate_ms */
	uint64_t rate_ms;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void wait_ms(struct repair *r, uint64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->lock);
	if (!r->stopping && !r->req && !r->scrub_changed)
		pthread_cond_timedwait(&r->cv, &r->lock, &ts);
	pthread_mutex_unlock(&r->lock);
}

/* ---- requests ---- */

static void serve_request(struct repair *r)
{
	int req, z, ret;
	char dir[VOL_PATH_MAX];

	pthread_mutex_lock(&r->lock);
	req = r->req;
	z = r->req_zone;
	memcpy(dir, r->req_dir, sizeof(dir));
	pthread_mutex_unlock(&r->lock);
	if (req == REQ_NONE)
		return;
	ret = vol_zone_replace(r->v, z, dir);
	pthread_mutex_lock(&r->lock);
	r->req = REQ_NONE;
	r->req_ret = ret;
	pthread_cond_broadcast(&r->done_cv);
	pthread_mutex_unlock(&r->lock);
}

/* ---- resync and rebuild ---- */

/* Copy for one turn; the rates and ETAs of status from the progress. */
static int resync(struct repair *r, int mask, uint64_t until)
{
	struct vol_info vi;
	uint64_t dt;
	int busy = 0;

	for (int z = 0; z < VOL_ZONES; z++) {
		struct vol_heal_counts c = { 0 };
		int ret = 1;

		if (!(mask & (1 << z)))
			continue;
		while (ret == 1 && now_ms() < until)
			ret = vol_resync_step(r->v, z, 8, &c);
		busy |= ret == 1;
	}
	dt = now_ms() - r->rate_ms;
	if (dt < 2000 || vol_info(r->v, &vi))
		return busy;
	pthread_mutex_lock(&r->lock);
	for (int z = 0; z < VOL_ZONES; z++) {
		uint64_t done = vi.zones[z].repaired_blocks;
		uint64_t left = vi.zones[z].behind_blocks * VOL_BLOCK_BYTES;
		uint64_t rate = done >= r->repaired[z] ?
					(done - r->repaired[z]) *
						VOL_BLOCK_BYTES * 1000 / dt :
					0;

		r->repaired[z] = done;
		/* Smoothed: empty regions go much faster than full ones. */
		r->zone_rate[z] =
			r->zone_rate[z] ? (r->zone_rate[z] + rate) / 2 : rate;
		r->zone_eta[z] = left && r->zone_rate[z] ?
					 left / r->zone_rate[z] + 1 :
					 0;
	}
	pthread_mutex_unlock(&r->lock);
	r->rate_ms = now_ms();
	return busy;
}

/* ---- the scrub ---- */

static void save_scrub(struct repair *r)
{
	struct vol_scrub_rec s;

	pthread_mutex_lock(&r->lock);
	s = r->scrub;
	pthread_mutex_unlock(&r->lock);
	if (vol_scrub_rec_store(r->v, &s))
		vol_log(VOL_LOG_WARN, "cannot store the scrub's progress in "
				      "the zones: it restarts from the "
				      "beginning after a remount");
}

/* Caller holds r->lock.  A new scrub, or the stopped one resumed. */
static void scrub_begin(struct repair *r, int deep, int demand)
{
	if (r->scrub.state == VOL_SCRUB_STOPPED && (int)r->scrub.deep == deep) {
		r->scrub.state = VOL_SCRUB_RUNNING; /* resume */
	} else {
		memset(&r->scrub, 0, sizeof(r->scrub));
		r->scrub.state = VOL_SCRUB_RUNNING;
		r->scrub.deep = (uint32_t)deep;
		r->scrub.started = time(NULL);
		r->nlost = 0;
	}
	r->scrub_demand = demand;
	r->scrub_changed = 1;
	r->scrub_synced = 0;
	pthread_cond_broadcast(&r->cv);
}

/* Store what start/stop changed; start a background scrub when due. */
static void scrub_schedule(struct repair *r)
{
	uint64_t now = (uint64_t)time(NULL);
	int changed;

	pthread_mutex_lock(&r->lock);
	if (r->o.scrub_rate_mb && r->scrub.state != VOL_SCRUB_RUNNING &&
	    r->scrub.state != VOL_SCRUB_STOPPED) {
		uint64_t interval = r->o.scrub_interval_s ?
					    r->o.scrub_interval_s :
					    REPAIR_INTERVAL_DEFAULT_S;
		uint64_t due = r->scrub.state == VOL_SCRUB_NONE ?
				       r->mounted_s + REPAIR_FIRST_SCRUB_S :
				       (uint64_t)r->scrub.finished + interval;

		if (now >= due) {
			scrub_begin(r, 1, 0); /* deep: bit rot is its point */
			vol_log(VOL_LOG_INFO, "background scrub started");
		}
	}
	changed = r->scrub_changed;
	r->scrub_changed = 0;
	pthread_mutex_unlock(&r->lock);
	if (changed)
		save_scrub(r);
}

/* One paced turn of the scrub.  Returns 1 while it runs. */
static int scrub_turn(struct repair *r, uint64_t *saved_ms)
{
	struct vol_heal_counts c = { 0 };
	uint64_t lost[REPAIR_MAX_LOST], lba, t0 = now_ms(), rate;
	uint32_t nlost = 0, budget;
	int ret, deep, synced;

	pthread_mutex_lock(&r->lock);
	if (r->scrub.state != VOL_SCRUB_RUNNING) {
		pthread_mutex_unlock(&r->lock);
		return 0;
	}
	lba = r->scrub.cursor;
	deep = (int)r->scrub.deep;
	rate = r->o.scrub_rate_mb;
	if (r->scrub_demand && rate < REPAIR_DEMAND_RATE)
		rate = REPAIR_DEMAND_RATE;
	synced = r->scrub_synced;
	r->scrub_synced = 1;
	pthread_mutex_unlock(&r->lock);
	/*
	 * The scrub reads the segments: what is acknowledged but still only
	 * in the logs (a round gathers for a while) goes there first,
	 * so a scrub covers every write made before it started.
	 */
	if (!synced && (ret = vol_sync(r->v)))
		vol_log(VOL_LOG_WARN,
			"scrub: the newest writes are not in the segments yet "
			"(%s); it checks what is there",
			strerror(-ret));
	/* Blocks of one turn at the rate (MB/s of blocks checked). */
	budget = (uint32_t)(rate * 1000000 / VOL_BLOCK_BYTES * REPAIR_TURN_MS /
			    1000);
	if (!budget)
		budget = 1;
	ret = vol_scrub_step(r->v, &lba, budget, deep, &c, lost,
			     REPAIR_MAX_LOST, &nlost);
	for (uint32_t i = 0; i < nlost; i++) {
		struct repair_lost l = { .lba = lost[i] };

		if (!r->o.name_of ||
		    r->o.name_of(r->o.name_arg, l.lba, l.file, sizeof(l.file)))
			l.file[0] = 0;
		pthread_mutex_lock(&r->lock);
		if (r->nlost < REPAIR_MAX_LOST)
			r->lost[r->nlost++] = l;
		pthread_mutex_unlock(&r->lock);
		vol_log(VOL_LOG_ERR, "scrub: block %llu%s%s is lost",
			(unsigned long long)l.lba, l.file[0] ? " of " : "",
			l.file);
	}
	pthread_mutex_lock(&r->lock);
	if (r->scrub.state == VOL_SCRUB_RUNNING) {
		r->scrub.cursor = lba;
		if (ret == 1) {
			r->scrub.state = VOL_SCRUB_FINISHED;
			r->scrub.finished = time(NULL);
		}
	}
	r->scrub.checked += c.checked;
	r->scrub.found += c.found;
	r->scrub.healed += c.healed;
	r->scrub.unrecoverable += c.unrecoverable;
	pthread_mutex_unlock(&r->lock);
	if (ret < 0) {
		vol_log(VOL_LOG_ERR, "scrub: %s; it stops", strerror(-ret));
		pthread_mutex_lock(&r->lock);
		r->scrub.state = VOL_SCRUB_STOPPED;
		pthread_mutex_unlock(&r->lock);
	}
	if (ret || now_ms() - *saved_ms >= REPAIR_SAVE_MS) {
		save_scrub(r);
		*saved_ms = now_ms();
	}
	if (ret == 1)
		vol_log(VOL_LOG_INFO,
			"scrub finished: %llu blocks checked, %llu bad copies "
			"found, %llu healed, %llu unrecoverable",
			(unsigned long long)r->scrub.checked,
			(unsigned long long)r->scrub.found,
			(unsigned long long)r->scrub.healed,
			(unsigned long long)r->scrub.unrecoverable);
	/* Pace: a turn's budget per REPAIR_TURN_MS. */
	if (!ret && now_ms() - t0 < REPAIR_TURN_MS)
		wait_ms(r, REPAIR_TURN_MS - (now_ms() - t0));
	return !ret;
}

static void *repair_thread(void *arg)
{
	struct repair *r = arg;
	uint64_t probed = 0, saved = now_ms();

	for (;;) {
		struct vol_heal_counts c = { 0 };
		int mask = 0, busy;

		pthread_mutex_lock(&r->lock);
		if (r->stopping) {
			pthread_mutex_unlock(&r->lock);
			break;
		}
		pthread_mutex_unlock(&r->lock);
		serve_request(r);
		if (now_ms() - probed >= REPAIR_PROBE_MS) {
			mask = vol_zone_probe(r->v);
			probed = now_ms();
		}
		if (vol_heal_queued(r->v, &c))
			vol_log(VOL_LOG_WARN,
				"healing what reads found failed");
		busy = mask ? resync(r, mask, now_ms() + REPAIR_TURN_MS) : 0;
		scrub_schedule(r);
		busy |= scrub_turn(r, &saved);
		if (!busy)
			wait_ms(r, REPAIR_PROBE_MS);
		else if (mask)
			probed = 0; /* keep copying next turn */
	}
	return NULL;
}

int repair_start(struct vol *v, const struct repair_opts *o,
		 struct repair **out)
{
	struct repair *r = calloc(1, sizeof(*r));
	struct vol_info vi;
	sigset_t all, old;
	int ret;

	if (!r)
		return -ENOMEM;
	r->v = v;
	r->o = *o;
	r->mounted_s = (uint64_t)time(NULL);
	r->rate_ms = now_ms();
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cv, NULL);
	pthread_cond_init(&r->done_cv, NULL);
	ret = vol_info(v, &vi);
	if (ret)
		goto out_free;
	r->scrub = vi.scrub; /* a running one resumes at its cursor */
	if (r->scrub.state == VOL_SCRUB_RUNNING)
		vol_log(VOL_LOG_INFO, "scrub resumes at block %llu",
			(unsigned long long)r->scrub.cursor);
	/* Signals are the daemon's main thread's business. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&r->thread, NULL, repair_thread, r);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret)
		goto out_free;
	*out = r;
	return 0;
out_free:
	pthread_cond_destroy(&r->done_cv);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->lock);
	free(r);
	return ret;
}

void repair_stop(struct repair *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stopping = 1;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->thread, NULL);
	if (r->scrub.state != VOL_SCRUB_NONE)
		save_scrub(r); /* running: resumes at the next mount */
	pthread_cond_destroy(&r->done_cv);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

int repair_scrub_start(struct repair *r, int deep)
{
	int ret = 0;

	pthread_mutex_lock(&r->lock);
	if (r->scrub.state == VOL_SCRUB_RUNNING)
		ret = -EALREADY;
	else
		scrub_begin(r, !!deep, 1);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int repair_scrub_stop(struct repair *r)
{
	int ret = 0;

	pthread_mutex_lock(&r->lock);
	if (r->scrub.state != VOL_SCRUB_RUNNING) {
		ret = -ENOENT;
	} else {
		r->scrub.state = VOL_SCRUB_STOPPED;
		r->scrub_changed = 1;
		pthread_cond_broadcast(&r->cv);
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

/* The thread looks at the zones at once (an online zone rejoins). */
static int zone_admin(struct repair *r, int z, int offline)
{
	int ret = vol_zone_set_offline(r->v, z, offline);

	pthread_mutex_lock(&r->lock);
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int repair_zone_offline(struct repair *r, int z)
{
	return zone_admin(r, z, 1);
}

int repair_zone_online(struct repair *r, int z)
{
	return zone_admin(r, z, 0);
}

int repair_zone_replace(struct repair *r, int z, const char *dir)
{
	int ret;

	if (z < 0 || z >= VOL_ZONES || !dir || strlen(dir) >= VOL_PATH_MAX)
		return -EINVAL;
	pthread_mutex_lock(&r->lock);
	while (r->req != REQ_NONE && !r->stopping)
		pthread_cond_wait(&r->done_cv, &r->lock);
	if (r->stopping) {
		pthread_mutex_unlock(&r->lock);
		return -ESHUTDOWN;
	}
	r->req = REQ_REPLACE;
	r->req_zone = z;
	snprintf(r->req_dir, sizeof(r->req_dir), "%s", dir);
	pthread_cond_broadcast(&r->cv);
	while (r->req != REQ_NONE && !r->stopping)
		pthread_cond_wait(&r->done_cv, &r->lock);
	ret = r->req == REQ_NONE ? r->req_ret : -ESHUTDOWN;
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int repair_info(struct repair *r, struct repair_info *out)
{
	int ret;

	memset(out, 0, sizeof(*out));
	ret = vol_info(r->v, &out->vol);
	if (ret)
		return ret;
	out->live = 1;
	out->scrub.total_blocks = vol_capacity_blocks(r->v);
	pthread_mutex_lock(&r->lock);
	out->scrub.rec = r->scrub;
	out->vol.scrub = r->scrub;
	out->scrub.rate_mb = r->o.scrub_rate_mb;
	if (r->scrub_demand && out->scrub.rate_mb < REPAIR_DEMAND_RATE)
		out->scrub.rate_mb = REPAIR_DEMAND_RATE;
	out->scrub.nlost = r->nlost;
	memcpy(out->scrub.lost, r->lost, sizeof(r->lost));
	for (int z = 0; z < VOL_ZONES; z++) {
		int copying = out->vol.zones[z].state == VOL_ZONE_RESYNCING ||
			      out->vol.zones[z].state == VOL_ZONE_REBUILDING;

		out->zone_rate[z] = copying ? r->zone_rate[z] : 0;
		out->zone_eta_s[z] = copying ? r->zone_eta[z] : 0;
	}
	pthread_mutex_unlock(&r->lock);
	return 0;
}
