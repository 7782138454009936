/*
 * fs_main.c - the `sixfold` program: one binary, subcommands dispatched
 * to the module that owns them (STYLE 2).  Wiring only.
 */
#include <stdio.h>
#include <string.h>

#include "keys/keys.h"
#include "repair/repair.h"
#include "volume/volume.h"

int key_main(int argc, char **argv);
int fs_main_mount(int argc, char **argv);
int fs_main_umount(int argc, char **argv);
int fs_main_fsck(int argc, char **argv);

struct cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
};

static const struct cmd cmds[] = {
	{ "mkfs", vol_main_mkfs, "format six zone directories into a volume" },
	{ "mount", fs_main_mount, "mount a volume's filesystem (FUSE)" },
	{ "umount", fs_main_umount, "unmount it, once everything is durable" },
	{ "fsck", fs_main_fsck, "check an unmounted volume's filesystem" },
	{ "status", repair_main_status,
	  "show health, zones, repair and scrub progress" },
	{ "scrub", repair_main_scrub,
	  "start, stop or show a scrub of a mounted volume" },
	{ "zone", repair_main_zone,
	  "take a zone offline, bring it back, or replace it" },
	{ "key", key_main, "add, remove, list or change key slots" },
	{ "bench-volume", vol_main_bench,
	  "measure commits and throughput against six plain files" },
	{ NULL, NULL, NULL },
};

static int usage(FILE *f)
{
	fprintf(f, "usage: sixfold COMMAND [OPTIONS] ARGS\n\ncommands:\n");
	for (const struct cmd *c = cmds; c->name; c++)
		fprintf(f, "  %-13s %s\n", c->name, c->help);
	fprintf(f, "\n'sixfold COMMAND --help' shows a command's options; "
		   "'man 8 sixfold' has them all.\n");
	return f == stdout ? 0 : 64;
}

int main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/');

	/* mount(8) runs /sbin/mount.sixfold for fstab lines of that type */
	if (!strcmp(base ? base + 1 : argv[0], "mount.sixfold"))
		return fs_main_mount(argc, argv);
	if (argc < 2)
		return usage(stderr);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help"))
		return usage(stdout);
	for (const struct cmd *c = cmds; c->name; c++)
		if (!strcmp(argv[1], c->name))
			return c->fn(argc - 1, argv + 1);
	fprintf(stderr, "sixfold: unknown command '%s'\n", argv[1]);
	return usage(stderr);
}
