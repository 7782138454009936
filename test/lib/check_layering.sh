#!/usr/bin/env bash
# check_layering.sh - fail on any #include edge the layering forbids
# (STYLE.md section 2).  Run by `make check-layering` from the repository
# root; prints "file:line: reason" for every violation and exits 1 if any.
#
# Modules and the public headers each may include (arrows point down only):
#     fs/     -> volume/volume.h
#     repair/ -> volume/volume.h
#     volume/ -> keys/keys.h
#     keys/   -> nothing of the project
# Rules:
#   1. direction: keys/ includes nothing from volume/ fs/ repair/;
#      volume/ nothing from fs/ repair/; repair/ nothing from fs/;
#      fs/ and repair/ nothing from keys/ (they reach keys through volume/).
#   2. "X/*_i.h" (internal header) only from files in directory X.
#   3. <fuse.h>, <fuse_lowlevel.h>, <fuse3/...> only in fs/.
#   4. <liburing.h>, <isa-l.h>, <isa-l/...> only in volume/; except
#      <liburing.h> in fs/fs_fuse.c, whose rings carry FUSE's requests
#      (FUSE over io_uring), not the volume's I/O.
#   5. <sodium.h>, <sodium/...> only in keys/.
# *_main.c (program wiring) may include any public header: rules 1 and 3 do
# not apply to them, rules 2, 4 and 5 do.  Files under test/ are exempt.
# Quoted includes are resolved like the compiler does with -I.: a name
# without a slash, or one starting with ./ or ../, relative to the including
# file's directory; anything else relative to the repository root.
set -euo pipefail

cd "${1:-$(dirname "$0")/../..}"

mapfile -d '' files < <(find . \( -path ./.git -o -path ./test -o \
	-path './build*' \) -prune -o -type f \( -name '*.c' -o -name '*.h' \) \
	-print0 | sort -z)
[ ${#files[@]} -eq 0 ] && { echo "check-layering: no sources"; exit 0; }

awk '
function dirname(p) { return p ~ /\// ? substr(p, 1, match(p, /\/[^\/]*$/) - 1) : "." }
function normalize(p,   n, parts, out, i, k) {
	n = split(p, parts, "/")
	k = 0
	for (i = 1; i <= n; i++) {
		if (parts[i] == "" || parts[i] == ".")
			continue
		if (parts[i] == ".." && k > 0 && out[k] != "..") {
			k--
			continue
		}
		out[++k] = parts[i]
	}
	p = ""
	for (i = 1; i <= k; i++)
		p = p (i > 1 ? "/" : "") out[i]
	return p
}
function bad(msg) {
	printf "%s:%d: %s\n", file, FNR, msg
	nbad++
}
FNR == 1 {
	file = FILENAME
	sub(/^\.\//, "", file)
	mod = file ~ /\// ? substr(file, 1, index(file, "/") - 1) : "."
	is_main = file ~ /_main\.c$/
}
/^[ \t]*#[ \t]*include[ \t]*[<"]/ {
	line = $0
	sub(/^[ \t]*#[ \t]*include[ \t]*/, "", line)
	quoted = substr(line, 1, 1) == "\""
	name = substr(line, 2)
	sub(/[>"].*$/, "", name)

	if (!quoted) {
		if (name ~ /^(fuse3\/)?fuse(_[a-z_]+)?\.h$/ && mod != "fs" && !is_main)
			bad("<" name "> outside fs/")
		if (name ~ /^liburing(\.h|\/)/ && mod != "volume" &&
		    file != "fs/fs_fuse.c")
			bad("<" name "> outside volume/")
		if (name ~ /^isa-l(\.h|\/)/ && mod != "volume")
			bad("<" name "> outside volume/")
		if (name ~ /^sodium(\.h|\/)/ && mod != "keys")
			bad("<" name "> outside keys/")
		next
	}

	if (name !~ /\// || name ~ /^\.\.?\//)
		target = normalize(dirname(file) "/" name)
	else
		target = normalize(name)
	tmod = target ~ /\// ? substr(target, 1, index(target, "/") - 1) : "."

	if (target ~ /_i\.h$/ && tmod != mod)
		bad("\"" name "\": internal header of " tmod "/ included from " mod "/")
	if (is_main)
		next
	if (mod == "keys" && tmod ~ /^(volume|fs|repair)$/)
		bad("\"" name "\": keys/ is a leaf and may not include " tmod "/")
	else if (mod == "volume" && tmod ~ /^(fs|repair)$/)
		bad("\"" name "\": volume/ may not include " tmod "/ (upward)")
	else if (mod == "repair" && tmod == "fs")
		bad("\"" name "\": repair/ may not include fs/")
	else if (mod ~ /^(fs|repair)$/ && tmod == "keys")
		bad("\"" name "\": " mod "/ may not include keys/ (go through volume/)")
}
END {
	if (nbad) {
		printf "check-layering: %d forbidden include(s)\n", nbad
		exit 1
	}
}
' "${files[@]}"
echo "check-layering: ok (${#files[@]} files)"
