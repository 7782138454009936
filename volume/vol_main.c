/*
 * vol_main.c - the volume's commands: `sixfold mkfs` and `sixfold status`.
 *
 * Option parsing and wiring only (STYLE 2): the work is in the volume's
 * public API.  Exit status: 0 done, 1 failed, 2 wrong key, 64 bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys/keys.h"
#include "volume/volume.h"

#define EXIT_KEY 2
#define EXIT_USAGE 64

static int mkfs_usage(FILE *f)
{
	fprintf(f, "usage: sixfold mkfs [--key-file FILE] [--max-size SIZE] "
		   "[--log-size SIZE] [--force] Z0 Z1 Z2 Z3 Z4 Z5\n"
		   "  each zone is a directory, or several joined with ','\n");
	return f == stdout ? 0 : EXIT_USAGE;
}

int vol_main_mkfs(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "key-file", required_argument, NULL, 'k' },
		{ "max-size", required_argument, NULL, 'm' },
		{ "log-size", required_argument, NULL, 'l' },
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct vol_mkfs_opts o = { 0 };
	struct key_source src = { 0 };
	const char *key_file = NULL;
	uint8_t uuid[KEY_UUID_BYTES];
	uint64_t bytes;
	int c, ret;

	while ((c = getopt_long(argc, argv, "k:m:l:fh", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			key_file = optarg;
			break;
		case 'm':
			if (vol_parse_size(optarg, &bytes) || bytes < 4096 ||
			    bytes > VOL_MAX_BLOCKS * VOL_BLOCK_BYTES) {
				fprintf(stderr,
					"sixfold: --max-size %s: give 4K to "
					"64T, e.g. 20G\n",
					optarg);
				return EXIT_USAGE;
			}
			o.max_blocks = bytes / VOL_BLOCK_BYTES;
			break;
		case 'l':
			if (vol_parse_size(optarg, &bytes) ||
			    bytes < (8ull << 20) || bytes > (256ull << 20)) {
				fprintf(stderr,
					"sixfold: --log-size %s: give 8M to "
					"256M\n",
					optarg);
				return EXIT_USAGE;
			}
			o.log_blocks = (uint32_t)(bytes / VOL_BLOCK_BYTES);
			break;
		case 'f':
			o.force = 1;
			break;
		case 'h':
			return mkfs_usage(stdout);
		default:
			return mkfs_usage(stderr);
		}
	}
	if (argc - optind != VOL_ZONES) {
		fprintf(stderr,
			"sixfold: mkfs needs exactly six zones, got "
			"%d\n",
			argc - optind);
		return mkfs_usage(stderr);
	}
	for (int z = 0; z < VOL_ZONES; z++)
		o.zones[z] = argv[optind + z];
	if (key_init())
		return 1;
	ret = key_main_read(key_file, "Passphrase: ", 1, &src);
	if (ret)
		return 1;
	o.key = &src;
	ret = vol_mkfs(&o, uuid);
	key_source_release(&src);
	if (ret)
		return 1;
	printf("sixfold: volume ");
	for (int i = 0; i < KEY_UUID_BYTES; i++)
		printf("%02x", uuid[i]);
	printf(" made on six zones, maximum %" PRIu64 " GiB\n",
	       (o.max_blocks ? o.max_blocks : VOL_MAX_BLOCKS) *
			       VOL_BLOCK_BYTES >>
		       30);
	return 0;
}

static const char *state_name(enum vol_zone_state s)
{
	switch (s) {
	case VOL_ZONE_HEALTHY:
		return "healthy";
	case VOL_ZONE_DEGRADED:
		return "degraded";
	default:
		return "offline";
	}
}

static const char *health(const struct vol_info *in)
{
	int healthy = 0;

	for (int z = 0; z < VOL_ZONES; z++)
		healthy += in->zones[z].state == VOL_ZONE_HEALTHY;
	if (healthy == VOL_ZONES)
		return "healthy";
	return in->write_quorum ? "degraded" : "unavailable";
}

static void print_json(const struct vol_info *in)
{
	printf("{\"health\": \"%s\", \"uuid\": \"", health(in));
	for (int i = 0; i < KEY_UUID_BYTES; i++)
		printf("%02x", in->uuid[i]);
	printf("\", \"epoch\": %" PRIu64 ", \"capacity_bytes\": %" PRIu64
	       ", \"max_bytes\": %" PRIu64 ", \"used_bytes\": %" PRIu64
	       ", \"write_quorum\": %s, \"in_use_by\": ",
	       in->epoch, in->capacity_blocks * VOL_BLOCK_BYTES,
	       in->max_blocks * VOL_BLOCK_BYTES,
	       in->used_blocks * VOL_BLOCK_BYTES,
	       in->write_quorum ? "true" : "false");
	vol_json_str(stdout, in->holder);
	printf(", \"zones\": [");
	for (int z = 0; z < VOL_ZONES; z++) {
		const struct vol_zone_info *zi = &in->zones[z];

		printf("%s{\"index\": %d, \"path\": ", z ? ", " : "", z);
		vol_json_str(stdout, zi->path);
		printf(", \"state\": \"%s\", \"epoch\": %" PRIu64
		       ", \"applied_lsn\": %" PRIu64 ", \"lag_lsn\": %" PRIu64
		       ", \"behind_blocks\": %" PRIu64
		       ", \"used_bytes\": %" PRIu64 ", \"reason\": ",
		       state_name(zi->state), zi->epoch, zi->applied_lsn,
		       zi->lag_lsn, zi->behind_regions * 256,
		       zi->used_blocks * VOL_BLOCK_BYTES);
		vol_json_str(stdout, zi->reason);
		printf("}");
	}
	printf("]}\n");
}

static void print_text(const struct vol_info *in)
{
	printf("volume ");
	for (int i = 0; i < KEY_UUID_BYTES; i++)
		printf("%02x", in->uuid[i]);
	printf(": %s, %s\n", health(in),
	       in->holder[0] ? "in use" : "not in use");
	if (in->holder[0])
		printf("  in use by: %s\n", in->holder);
	printf("  capacity:  %" PRIu64 " GiB (grows by 10 GiB up to %" PRIu64
	       " GiB)\n  used:      %" PRIu64 " MiB\n  epoch:     %" PRIu64
	       "\n\n",
	       in->capacity_blocks * VOL_BLOCK_BYTES >> 30,
	       in->max_blocks * VOL_BLOCK_BYTES >> 30,
	       in->used_blocks * VOL_BLOCK_BYTES >> 20, in->epoch);
	printf("  ZONE STATE     EPOCH  APPLIED-LSN  LAG    USED-MiB  PATH\n");
	for (int z = 0; z < VOL_ZONES; z++) {
		const struct vol_zone_info *zi = &in->zones[z];

		printf("  %-4d %-9s %6" PRIu64 " %12" PRIu64 " %-6" PRIu64
		       " %9" PRIu64 "  %s\n",
		       z, state_name(zi->state), zi->epoch, zi->applied_lsn,
		       zi->lag_lsn, zi->used_blocks * VOL_BLOCK_BYTES >> 20,
		       zi->path);
		if (zi->state != VOL_ZONE_HEALTHY && zi->reason[0])
			printf("       %s\n", zi->reason);
	}
}

int vol_main_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct vol_info in;
	int c, json = 0, ret;

	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		if (c != 'j') {
			fprintf(c == 'h' ? stdout : stderr,
				"usage: sixfold status [--json] VOLUME\n"
				"  VOLUME: one zone directory, or all six\n");
			return c == 'h' ? 0 : EXIT_USAGE;
		}
		json = 1;
	}
	if (argc - optind != 1 && argc - optind != VOL_ZONES) {
		fprintf(stderr, "usage: sixfold status [--json] VOLUME\n");
		return EXIT_USAGE;
	}
	ret = vol_status((const char *const *)argv + optind, argc - optind,
			 &in);
	if (ret)
		return 1;
	if (json)
		print_json(&in);
	else
		print_text(&in);
	return 0;
}
