/*
 * vol_json.c - a JSON string printer for the commands and tools that
 * report a volume's state (status --json, bench-volume --json).
 *
 * Layer: volume/, output formatting only.
 */
#include <stdio.h>

#include "volume/volume.h"

/*
 * Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF), or 0.
 */
static int utf8_len(const unsigned char *s)
{
	int n = s[0] < 0xc2 ? 0 :
		s[0] < 0xe0 ? 2 :
		s[0] < 0xf0 ? 3 :
		s[0] < 0xf5 ? 4 :
			      0;

	for (int i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
	    (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
		return 0;
	return n;
}

/*
 * Print s as a JSON string literal (quotes, escapes) to f.  JSON text is
 * UTF-8: a byte that starts no well-formed sequence (a path in another
 * encoding, a message cut inside a character) is printed as U+FFFD, so
 * that a reader's parser never fails on the whole status.
 */
void vol_json_str(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	fputc('"', f);
	while (*p) {
		int n;

		if (*p == '"' || *p == '\\') {
			fprintf(f, "\\%c", *p++);
		} else if (*p < 0x20) {
			fprintf(f, "\\u%04x", (unsigned)*p++);
		} else if (*p < 0x80) {
			fputc(*p++, f);
		} else if ((n = utf8_len(p)) > 0) {
			fwrite(p, 1, (size_t)n, f);
			p += n;
		} else {
			fputs("\\ufffd", f);
			p++;
		}
	}
	fputc('"', f);
}
