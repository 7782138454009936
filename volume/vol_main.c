/*
 * vol_main.c - the volume's command `sixfold mkfs` (`sixfold status`
 * moved to repair/repair_main.c, which also asks a running daemon).
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
	ret = key_main_read(key_file, "New passphrase: ", 1, &src);
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
