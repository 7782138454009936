/*
 * vol_json.c - a JSON string printer for the commands and tools that
 * report a volume's state (status --json, bench-volume --json).
 *
 * Layer: volume/, output formatting only.
 */
#include <stdio.h>

#include "volume/volume.h"

/* Print s as a JSON string literal (quotes, escapes) to f. */
void vol_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", (unsigned)*s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}
