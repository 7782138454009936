/*
 * key_main.c - `sixfold key add|remove|list|passwd VOLUME`: change the key
 * header of a volume that is not in use.  Only the key header is
 * rewritten, never data.  Wiring only: keys/ changes the header bytes,
 * volume/ finds, checks and stores them in every zone.
 *
 * Exit status: 0 done, 1 failed, 2 wrong key, 64 bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys/keys.h"
#include "volume/volume.h"

#define EXIT_KEY 2
#define EXIT_USAGE 64

int key_main(int argc, char **argv);

static int usage(FILE *f)
{
	fprintf(f,
		"usage: sixfold key list VOLUME\n"
		"       sixfold key add [--key-file OLD] [--new-key-file NEW] "
		"VOLUME\n"
		"       sixfold key passwd [--key-file OLD] [--new-key-file "
		"NEW] VOLUME\n"
		"       sixfold key remove [--key-file KEY] --slot N VOLUME\n"
		"  a key not given as a file is asked for without echo\n");
	return f == stdout ? 0 : EXIT_USAGE;
}

int key_main_read(const char *file, const char *prompt, int confirm,
		  struct key_source *src)
{
	int ret = file ? key_source_read_file(file, src) :
			 key_source_prompt(prompt, confirm, src);

	if (ret && file)
		fprintf(stderr, "sixfold: cannot read key file %s: %s\n", file,
			ret == -EINVAL ? "empty or over 1 MiB" :
					 strerror(-ret));
	else if (ret)
		fprintf(stderr, "sixfold: no passphrase: %s\n",
			ret == -EINVAL	 ? "empty, or the two entries differ" :
			ret == -EMSGSIZE ? "longer than 4096 bytes" :
					   strerror(-ret));
	return ret;
}

static const char *kind_name(enum key_kind k)
{
	return k == KEY_KIND_PASSPHRASE ? "passphrase" :
	       k == KEY_KIND_KEYFILE	? "key file" :
					  "unknown";
}

static int list(struct vol_keyadm *ka)
{
	uint8_t hdr[KEY_HEADER_BYTES];
	struct key_slot_info info[KEY_SLOTS];
	int n;

	if (vol_keyadm_header(ka, hdr))
		return 1;
	n = key_header_list(hdr, info, KEY_SLOTS);
	if (n < 0) {
		fprintf(stderr, "sixfold: the key header is damaged\n");
		return 1;
	}
	printf("SLOT  KIND\n");
	for (int i = 0; i < n && i < KEY_SLOTS; i++) {
		printf("%-4d  %s", info[i].slot, kind_name(info[i].kind));
		if (info[i].kind == KEY_KIND_PASSPHRASE)
			printf(" (argon2id, ops %llu, mem %llu MiB)",
			       (unsigned long long)info[i].opslimit,
			       (unsigned long long)(info[i].memlimit >> 20));
		printf("\n");
	}
	return 0;
}

/* Unlock with the old key; 0, or the exit status. */
static int unlock(struct vol_keyadm *ka, const char *file,
		  struct key_master **mk, uint8_t *hdr, int *slot)
{
	struct key_source src = { 0 };
	int ret;

	if (key_main_read(file, "Passphrase: ", 0, &src))
		return 1;
	ret = vol_keyadm_unlock(ka, &src, mk, hdr);
	key_source_release(&src);
	if (ret == -EKEYREJECTED) {
		fprintf(stderr, "sixfold: wrong passphrase or key file: no key "
				"slot accepts it; nothing was changed\n");
		return EXIT_KEY;
	}
	if (ret == -EBADMSG) {
		fprintf(stderr, "sixfold: the newest key header does not "
				"authenticate (damaged or forged); nothing was "
				"changed\n");
		return 1;
	}
	if (ret < 0) {
		fprintf(stderr,
			"sixfold: cannot unlock the volume: %s; nothing was "
			"changed\n",
			strerror(-ret));
		return 1;
	}
	*slot = ret;
	return 0;
}

/*
 * Store hdr on the zones (what: the change, for the message, and its
 * slot): 0, or -1 after saying what the zones now hold.  A header that
 * reached some zones but not four is the newest on those, so it is in
 * force wherever they take part in unlocking.
 */
static int store(struct vol_keyadm *ka, const uint8_t *hdr, const char *what,
		 int slot)
{
	int written, ret = vol_keyadm_store(ka, hdr, &written);

	if (!ret)
		return 0;
	if (written)
		fprintf(stderr,
			"sixfold: %s %d reached only %d zones (4 needed): "
			"it is in force where it landed, and the volume's "
			"other keys are unchanged; run the command again once "
			"every zone is writable\n",
			what, slot, written);
	else if (ret != -EIO)
		fprintf(stderr, "sixfold: %s %d: %s; nothing was changed\n",
			what, slot, strerror(-ret));
	return -1;
}

int key_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "key-file", required_argument, NULL, 'k' },
		{ "new-key-file", required_argument, NULL, 'n' },
		{ "slot", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *key_file = NULL, *new_file = NULL, *verb;
	uint8_t hdr[KEY_HEADER_BYTES];
	struct key_master *mk = NULL;
	struct vol_keyadm *ka = NULL;
	struct key_source nsrc = { 0 };
	int c, slot = -1, used = -1, ret;
	char *end;

	if (argc < 2)
		return usage(stderr);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return usage(stdout);
	verb = argv[1];
	argc--;
	argv++;
	while ((c = getopt_long(argc, argv, "k:n:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			key_file = optarg;
			break;
		case 'n':
			new_file = optarg;
			break;
		case 's': {
			long n;

			errno = 0;
			n = strtol(optarg, &end, 10);
			if (end == optarg || *end || errno || n < 0 ||
			    n >= KEY_SLOTS) {
				fprintf(stderr,
					"sixfold: --slot %s: give a slot "
					"number, 0..%d\n",
					optarg, KEY_SLOTS - 1);
				return EXIT_USAGE;
			}
			slot = (int)n;
			break;
		}
		case 'h':
			return usage(stdout);
		default:
			return usage(stderr);
		}
	}
	if (argc - optind != 1 && argc - optind != 6)
		return usage(stderr);
	if (strcmp(verb, "list") && strcmp(verb, "add") &&
	    strcmp(verb, "remove") && strcmp(verb, "passwd"))
		return usage(stderr);
	if (!strcmp(verb, "remove") && slot < 0) {
		fprintf(stderr, "sixfold: key remove needs --slot N (see "
				"'sixfold key list')\n");
		return EXIT_USAGE;
	}
	if (key_init())
		return 1;
	if (vol_keyadm_open((const char *const *)argv + optind, argc - optind,
			    &ka))
		return 1;
	if (!strcmp(verb, "list")) {
		ret = list(ka);
		goto out_close;
	}
	ret = unlock(ka, key_file, &mk, hdr, &used);
	if (ret)
		goto out_close;
	ret = 1;
	if (!strcmp(verb, "remove")) {
		int r = key_header_remove(hdr, vol_keyadm_uuid(ka), mk, slot);

		if (r == -EBUSY)
			fprintf(stderr,
				"sixfold: slot %d is the last one; add "
				"another key first\n",
				slot);
		else if (r == -ENOENT)
			fprintf(stderr, "sixfold: slot %d is empty\n", slot);
		else if (r)
			fprintf(stderr, "sixfold: cannot remove slot %d: %s\n",
				slot, strerror(-r));
		else if (!store(ka, hdr, "removing slot", slot))
			ret = 0;
		goto out_close;
	}
	if (key_main_read(new_file, "New passphrase: ", 1, &nsrc))
		goto out_close;
	c = key_header_add(hdr, vol_keyadm_uuid(ka), mk, &nsrc);
	key_source_release(&nsrc);
	if (c == -ENOSPC) {
		fprintf(stderr,
			"sixfold: all %d key slots are in use; remove "
			"one first\n",
			KEY_SLOTS);
		goto out_close;
	}
	if (c < 0) {
		fprintf(stderr, "sixfold: cannot add the key: %s\n",
			strerror(-c));
		goto out_close;
	}
	if (store(ka, hdr, "adding the new key in slot", c))
		goto out_close;
	/*
	 * passwd: the new slot replaces the one that unlocked, in a second
	 * header of its own, written only once the first is on four zones.
	 * Retired in the first header, the old key could stop working after
	 * a write that reached too few zones and a message that said the
	 * change had failed; now a failed first write leaves the old key
	 * working, and a failed second one the new key.
	 */
	if (!strcmp(verb, "passwd")) {
		int r = key_header_remove(hdr, vol_keyadm_uuid(ka), mk, used);

		if (r) {
			fprintf(stderr,
				"sixfold: the new key is in slot %d, but slot "
				"%d cannot be retired: %s; run 'sixfold key "
				"remove --slot %d'\n",
				c, used, strerror(-r), used);
			goto out_close;
		}
		if (store(ka, hdr, "retiring the old key in slot", used)) {
			fprintf(stderr,
				"sixfold: the new key (slot %d) opens the "
				"volume; to retire the old one, run 'sixfold "
				"key remove --slot %d' once the zones are "
				"writable\n",
				c, used);
			goto out_close;
		}
	}
	printf("sixfold: key %s in slot %d\n",
	       strcmp(verb, "passwd") ? "added" : "changed", c);
	ret = 0;
out_close:
	key_master_free(mk);
	vol_keyadm_close(ka);
	return ret;
}
