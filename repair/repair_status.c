/*
 * repair_status.c - what `sixfold status` shows: a volume's health, its
 * zones, repair progress and the scrub, as text for a person (a summary
 * line first, like zpool status) or as one JSON object for scripts
 * (sixfold(8), STATUS JSON).  Also the same information for a volume
 * that no daemon serves here, from its zones on disk.
 *
 * Layer: repair/, above volume/.  Formatting only: no locks, no I/O but
 * the FILE it is given (and vol_status for repair_info_offline).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "repair/repair.h"

static const char *health_of(const struct vol_info *in)
{
	int healthy = 0;

	for (int z = 0; z < VOL_ZONES; z++)
		healthy += in->zones[z].state == VOL_ZONE_HEALTHY;
	if (healthy == VOL_ZONES)
		return "healthy";
	return in->write_quorum ? "degraded" : "unavailable";
}

/* Zones that take writes: all but the offline ones. */
static int writable(const struct vol_info *in)
{
	int n = 0;

	for (int z = 0; z < VOL_ZONES; z++)
		n += in->zones[z].state != VOL_ZONE_OFFLINE;
	return n;
}

static int repairing(enum vol_zone_state s)
{
	return s == VOL_ZONE_RESYNCING || s == VOL_ZONE_REBUILDING;
}

/* done of done + left, in percent (0..100). */
static unsigned percent(uint64_t done, uint64_t total)
{
	if (!total)
		return 0;
	if (done >= total)
		return 100;
	return (unsigned)(done * 100 / total);
}

static unsigned zone_percent(const struct vol_zone_info *zi)
{
	return percent(zi->repaired_blocks,
		       zi->repaired_blocks + zi->behind_blocks);
}

static void print_uuid(FILE *f, const uint8_t *uuid)
{
	for (int i = 0; i < KEY_UUID_BYTES; i++)
		fprintf(f, "%02x", uuid[i]);
}

/* "1h02m", "3m20s", "45s" into buf. */
static const char *duration(uint64_t s, char *buf, size_t len)
{
	if (s >= 3600)
		snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m", s / 3600,
			 s / 60 % 60);
	else if (s >= 60)
		snprintf(buf, len, "%" PRIu64 "m%02" PRIu64 "s", s / 60,
			 s % 60);
	else
		snprintf(buf, len, "%" PRIu64 "s", s);
	return buf;
}

/* Local time of t as "2026-11-26 18:00:01". */
static const char *when(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!localtime_r(&tt, &tm) ||
	    !strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm))
		snprintf(buf, len, "%" PRId64, t);
	return buf;
}

/* ---- text ---- */

/* What follows the health on the summary line, for a volume that is
 * not healthy: which zones and what it means for writes. */
static void print_problems(FILE *f, const struct repair_info *ri)
{
	const struct vol_info *in = &ri->vol;
	int bad = 0, first = 1;

	for (int z = 0; z < VOL_ZONES; z++)
		bad += in->zones[z].state != VOL_ZONE_HEALTHY;
	fprintf(f, " \xe2\x80\x94 ");
	for (int z = 0; z < VOL_ZONES; z++) {
		const struct vol_zone_info *zi = &in->zones[z];

		if (zi->state == VOL_ZONE_HEALTHY)
			continue;
		fprintf(f, "%szone %d %s", first ? "" : ", ", z,
			vol_zone_state_name(zi->state));
		if (repairing(zi->state))
			fprintf(f, " %u%%", zone_percent(zi));
		if (bad == 1 && zi->reason[0])
			fprintf(f, " (%s)", zi->reason);
		first = 0;
	}
	if (in->write_quorum && ri->live)
		fprintf(f, "; writes go on with %d zones", writable(in));
	else if (in->write_quorum)
		fprintf(f, "; a mount would write to %d zones", writable(in));
	else if (ri->live)
		fprintf(f, "; fewer than %d zones, writes wait",
			VOL_WRITE_QUORUM);
	else
		fprintf(f,
			"; fewer than %d zones, it cannot be mounted until "
			"enough are back",
			VOL_WRITE_QUORUM);
}

static void print_summary(FILE *f, const struct repair_info *ri)
{
	const struct vol_info *in = &ri->vol;
	const char *health = health_of(in);

	fprintf(f, "volume ");
	print_uuid(f, in->uuid);
	fprintf(f, ": %s, %s", health, in->holder[0] ? "in use" : "not in use");
	if (strcmp(health, "healthy"))
		print_problems(f, ri);
	fputc('\n', f);
}

/* Milliseconds with two decimals, from microseconds. */
static const char *ms(uint64_t us, char *buf, size_t len)
{
	snprintf(buf, len, "%" PRIu64 ".%02" PRIu64, us / 1000, us % 1000 / 10);
	return buf;
}

static void print_commits(FILE *f, const struct vol_commit_info *c)
{
	const struct {
		const char *name;
		const struct vol_latency *l;
	} ph[] = { { "queued", &c->queued },
		   { "written", &c->written },
		   { "durable", &c->durable },
		   { "total", &c->total } };
	char a[32], b[32];

	fprintf(f, "  commits:   %" PRIu64 " batches durable since the mount",
		c->batches);
	if (!c->batches) {
		fputc('\n', f);
		return;
	}
	fprintf(f, "; p50/p99 ms:");
	for (size_t i = 0; i < sizeof(ph) / sizeof(ph[0]); i++)
		fprintf(f, "%s %s %s/%s", i ? "," : "", ph[i].name,
			ms(ph[i].l->p50_us, a, sizeof(a)),
			ms(ph[i].l->p99_us, b, sizeof(b)));
	fputc('\n', f);
}

static void print_volume(FILE *f, const struct repair_info *ri)
{
	const struct vol_info *in = &ri->vol;

	if (in->holder[0])
		fprintf(f, "  in use by: %s\n", in->holder);
	fprintf(f, "  state of:  %s\n",
		ri->live ? "the daemon serving the mount (live)" :
			   "the zones on disk (no daemon serves it here)");
	fprintf(f,
		"  capacity:  %" PRIu64 " GiB (grows by 10 GiB up to %" PRIu64
		" GiB)\n  used:      %" PRIu64 " MiB\n  epoch:     %" PRIu64
		"\n",
		in->capacity_blocks * VOL_BLOCK_BYTES >> 30,
		in->max_blocks * VOL_BLOCK_BYTES >> 30,
		in->used_blocks * VOL_BLOCK_BYTES >> 20, in->epoch);
	fprintf(f, "  writes:    %s: %d of %d zones take writes, %d needed%s\n",
		in->write_quorum ? "write quorum held" : "no write quorum",
		writable(in), VOL_ZONES, VOL_WRITE_QUORUM,
		in->write_quorum ? "" : " (writes wait for zones to return)");
	if (ri->live)
		fprintf(f,
			"  healing:   %" PRIu64 " copies rewritten since the "
			"mount, %" PRIu64 " bad copies met by reads\n",
			in->healed_copies, in->bad_copies);
	if (ri->live)
		fprintf(f,
			"  data:      %" PRIu64
			" MiB written in place, %" PRIu64
			" MiB through the log since the mount\n",
			in->direct_blocks * VOL_BLOCK_BYTES >> 20,
			in->logged_blocks * VOL_BLOCK_BYTES >> 20);
	if (ri->live)
		print_commits(f, &in->commit);
}

/* The REPAIR column: progress, rate and time left of a resync or
 * rebuild, "-" for a zone that needs none. */
static void repair_column(const struct repair_info *ri, int z, char *buf,
			  size_t len)
{
	const struct vol_zone_info *zi = &ri->vol.zones[z];
	char eta[32];
	int n;

	if (!repairing(zi->state)) {
		snprintf(buf, len, "-");
		return;
	}
	n = snprintf(buf, len, "%u%%", zone_percent(zi));
	if (n > 0 && (size_t)n < len && ri->zone_rate[z])
		n += snprintf(buf + n, len - (size_t)n, " %.1f MB/s",
			      (double)ri->zone_rate[z] / 1e6);
	if (n > 0 && (size_t)n < len && ri->zone_eta_s[z])
		snprintf(buf + n, len - (size_t)n, " ETA %s",
			 duration(ri->zone_eta_s[z], eta, sizeof(eta)));
}

static void print_zones(FILE *f, const struct repair_info *ri)
{
	char rep[64];

	fprintf(f, "\n  ZONE STATE        BEHIND  %-24s  USED-MiB  PATH\n",
		"REPAIR");
	for (int z = 0; z < VOL_ZONES; z++) {
		const struct vol_zone_info *zi = &ri->vol.zones[z];

		repair_column(ri, z, rep, sizeof(rep));
		fprintf(f,
			"  %-4d %-11s %7" PRIu64 "  %-24s  %8" PRIu64 "  %s\n",
			z, vol_zone_state_name(zi->state), zi->behind_blocks,
			rep, zi->used_blocks * VOL_BLOCK_BYTES >> 20, zi->path);
		if (zi->state != VOL_ZONE_HEALTHY && zi->reason[0])
			fprintf(f, "       %s\n", zi->reason);
		else if (zi->admin_offline)
			fprintf(f, "       taken offline by sixfold zone "
				   "offline (sixfold zone online brings it "
				   "back)\n");
	}
}

void repair_scrub_print(FILE *f, const struct repair_info *ri)
{
	const struct repair_scrub_info *s = &ri->scrub;
	const struct vol_scrub_rec *rec = &s->rec;
	char t0[32], t1[32];

	if (rec->state == VOL_SCRUB_NONE) {
		fprintf(f, "  scrub:     none yet (sixfold scrub start "
			   "MOUNTPOINT runs one)");
		if (s->rate_mb)
			fprintf(f, "; background scrub at %" PRIu32 " MB/s",
				s->rate_mb);
		fputc('\n', f);
		return;
	}
	fprintf(f, "  scrub:     %s%s, %u%% (block %" PRIu64 " of %" PRIu64 ")",
		vol_scrub_state_name((enum vol_scrub_state)rec->state),
		rec->deep ? " (deep)" : "",
		percent(rec->cursor, s->total_blocks), rec->cursor,
		s->total_blocks);
	if (s->rate_mb)
		fprintf(f, ", at most %" PRIu32 " MB/s", s->rate_mb);
	fprintf(f,
		"\n             %" PRIu64 " blocks checked, %" PRIu64
		" bad or missing copies found, %" PRIu64 " healed, %" PRIu64
		" unrecoverable\n",
		rec->checked, rec->found, rec->healed, rec->unrecoverable);
	fprintf(f, "             started %s",
		rec->started ? when(rec->started, t0, sizeof(t0)) : "-");
	if (rec->finished)
		fprintf(f, ", finished %s",
			when(rec->finished, t1, sizeof(t1)));
	fputc('\n', f);
	if (!rec->unrecoverable && !s->nlost)
		return;
	fprintf(f, "  lost:      blocks no zone holds a good copy of; "
		   "restore these files from a backup:\n");
	for (uint32_t i = 0; i < s->nlost && i < REPAIR_MAX_LOST; i++)
		fprintf(f, "             block %" PRIu64 "  %s\n",
			s->lost[i].lba,
			s->lost[i].file[0] ? s->lost[i].file :
					     "(in no file: free space or "
					     "filesystem metadata)");
	if (rec->unrecoverable > s->nlost && s->nlost)
		fprintf(f, "             and %" PRIu64 " more (%s)\n",
			rec->unrecoverable - s->nlost,
			ri->live ? "the list keeps the first ones" :
				   "mount the volume to see which files");
	else if (rec->unrecoverable > s->nlost)
		/* The count is stored with the scrub, the list is not. */
		fprintf(f, "             %" PRIu64 " blocks (%s)\n",
			rec->unrecoverable,
			ri->live ? "which ones was not kept across the "
				   "remount: run 'sixfold scrub start --deep' "
				   "to list them again" :
				   "mount the volume and run 'sixfold scrub "
				   "start --deep' to see which files");
}

/* ---- JSON ---- */

static void json_zone(FILE *f, const struct repair_info *ri, int z)
{
	const struct vol_zone_info *zi = &ri->vol.zones[z];

	fprintf(f, "{\"index\": %d, \"path\": ", z);
	vol_json_str(f, zi->path);
	fprintf(f,
		", \"state\": \"%s\", \"behind_blocks\": %" PRIu64
		", \"repaired_blocks\": %" PRIu64
		", \"rate_bytes_per_s\": %" PRIu64 ", \"eta_seconds\": %" PRIu64
		", \"admin_offline\": %s, \"reason\": ",
		vol_zone_state_name(zi->state), zi->behind_blocks,
		zi->repaired_blocks, ri->zone_rate[z], ri->zone_eta_s[z],
		zi->admin_offline ? "true" : "false");
	vol_json_str(f, zi->reason);
	fprintf(f,
		", \"epoch\": %" PRIu64 ", \"applied_lsn\": %" PRIu64
		", \"lag_lsn\": %" PRIu64 ", \"used_bytes\": %" PRIu64
		", \"flush_shared\": [",
		zi->epoch, zi->applied_lsn, zi->lag_lsn,
		zi->used_blocks * VOL_BLOCK_BYTES);
	for (int o = 0, n = 0; o < VOL_ZONES; o++)
		if (zi->flush_shared & (1u << o))
			fprintf(f, "%s%d", n++ ? ", " : "", o);
	fprintf(f, "]}");
}

static void json_scrub(FILE *f, const struct repair_info *ri)
{
	const struct repair_scrub_info *s = &ri->scrub;
	const struct vol_scrub_rec *rec = &s->rec;

	fprintf(f,
		"{\"state\": \"%s\", \"deep\": %s, \"checked\": %" PRIu64
		", \"found\": %" PRIu64 ", \"healed\": %" PRIu64
		", \"unrecoverable\": %" PRIu64 ", \"cursor\": %" PRIu64
		", \"total_blocks\": %" PRIu64 ", \"started\": %" PRId64
		", \"finished\": %" PRId64 ", \"rate_mb\": %" PRIu32
		", \"lost\": [",
		vol_scrub_state_name((enum vol_scrub_state)rec->state),
		rec->deep ? "true" : "false", rec->checked, rec->found,
		rec->healed, rec->unrecoverable, rec->cursor, s->total_blocks,
		rec->started, rec->finished, s->rate_mb);
	for (uint32_t i = 0; i < s->nlost && i < REPAIR_MAX_LOST; i++) {
		fprintf(f, "%s{\"lba\": %" PRIu64 ", \"file\": ", i ? ", " : "",
			s->lost[i].lba);
		vol_json_str(f, s->lost[i].file);
		fputc('}', f);
	}
	fprintf(f, "]}");
}

static void json_latency(FILE *f, const char *name, const struct vol_latency *l)
{
	fprintf(f,
		", \"%s\": {\"mean\": %" PRIu64 ", \"p50\": %" PRIu64
		", \"p90\": %" PRIu64 ", \"p99\": %" PRIu64
		", \"max\": %" PRIu64 "}",
		name, l->mean_us, l->p50_us, l->p90_us, l->p99_us, l->max_us);
}

static void json_commit(FILE *f, const struct vol_commit_info *c)
{
	fprintf(f, "{\"batches\": %" PRIu64, c->batches);
	json_latency(f, "queued_us", &c->queued);
	json_latency(f, "written_us", &c->written);
	json_latency(f, "durable_us", &c->durable);
	json_latency(f, "total_us", &c->total);
	fprintf(f,
		", \"shared_flushes\": %" PRIu64
		", \"waiter_flushes\": %" PRIu64 "}",
		c->shared_flushes, c->waiter_flushes);
}

static void print_json(FILE *f, const struct repair_info *ri)
{
	const struct vol_info *in = &ri->vol;

	fprintf(f, "{\"health\": \"%s\", \"live\": %s, \"uuid\": \"",
		health_of(in), ri->live ? "true" : "false");
	print_uuid(f, in->uuid);
	fprintf(f,
		"\", \"epoch\": %" PRIu64 ", \"capacity_bytes\": %" PRIu64
		", \"max_bytes\": %" PRIu64 ", \"used_bytes\": %" PRIu64
		", \"write_quorum\": %s, \"in_use_by\": ",
		in->epoch, in->capacity_blocks * VOL_BLOCK_BYTES,
		in->max_blocks * VOL_BLOCK_BYTES,
		in->used_blocks * VOL_BLOCK_BYTES,
		in->write_quorum ? "true" : "false");
	vol_json_str(f, in->holder);
	fprintf(f,
		", \"healed_copies\": %" PRIu64 ", \"bad_copies\": %" PRIu64
		", \"direct_bytes\": %" PRIu64 ", \"logged_bytes\": %" PRIu64
		", \"zones\": [",
		in->healed_copies, in->bad_copies,
		in->direct_blocks * VOL_BLOCK_BYTES,
		in->logged_blocks * VOL_BLOCK_BYTES);
	for (int z = 0; z < VOL_ZONES; z++) {
		if (z)
			fprintf(f, ", ");
		json_zone(f, ri, z);
	}
	fprintf(f, "], \"commit\": ");
	json_commit(f, &in->commit);
	fprintf(f, ", \"scrub\": ");
	json_scrub(f, ri);
	fprintf(f, "}\n");
}

void repair_status_print(FILE *f, const struct repair_info *ri, int json)
{
	if (json) {
		print_json(f, ri);
		return;
	}
	print_summary(f, ri);
	print_volume(f, ri);
	print_zones(f, ri);
	fputc('\n', f);
	repair_scrub_print(f, ri);
}

int repair_info_offline(const char *const *paths, int npaths,
			struct repair_info *out)
{
	int ret;

	memset(out, 0, sizeof(*out));
	ret = vol_status(paths, npaths, &out->vol);
	if (ret)
		return ret;
	out->live = 0;
	out->scrub.rec = out->vol.scrub;
	out->scrub.total_blocks = out->vol.capacity_blocks;
	return 0;
}
