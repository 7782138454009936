# sixfold - build, test and check.  GNU make.
#
#   make                 build/sixfold, build/tools/*, build/unit/* (default)
#   make test            deps check, build, check-layering, format-check,
#                        test-unit, test-int, test-uring (in that order)
#   make test-unit       run every build/unit/* program (0 pass, 77 skip)
#   make test-int        pytest over test/ (SIXFOLD_BIN, SIXFOLD_TOOLS set)
#   make asan            build everything into build-asan/ with ASan+UBSan,
#                        run the unit tests there, then test-fuse and
#                        test-uring
#   make test-fuse       the POSIX suite, model and mount tests (with
#                        SAN=asan: against the sanitized daemon)
#   make test-uring      the POSIX suite and model test with FUSE over
#                        io_uring switched on (Linux 6.14 or later)
#   make SAN=asan <goal> any goal against build-asan/ (SAN=tsan: build-tsan/)
#   make check-layering  forbidden #include edges (test/lib/check_layering.sh)
#   make format-check    clang-format --dry-run -Werror (kernel style)
#   make format          clang-format -i on the same files
#   make deps            apt-get install everything build and tests need
#   make bench           build, then the side-by-side benchmark (issue 5,
#                        test/bench/suite.py; PEERS=1 adds libfuse's
#                        passthrough, gocryptfs and GlusterFS; results in
#                        bench-out/)
#   make bench-memory    build, then the daemon's memory report
#   make clean           remove build/ build-asan/ build-tsan/
#
# Variables: WERROR=0 drops -Werror; XCFLAGS / XLDFLAGS append flags;
# UNIT_TIMEOUT (seconds per unit test, default 300); CC.
#
# Layout (STYLE.md sections 2, 8, 9):
#   <module>/*.c except *_main.c  -> $(BUILD)/lib<module>.a
#   */*_main.c                    -> $(BUILD)/sixfold (main() in fs/fs_main.c)
#   test/tools/<name>.c           -> $(BUILD)/tools/<name>
#   test/unit/<name>_test.c       -> $(BUILD)/unit/<name>_test
#   test/lib/*.c                  -> $(BUILD)/libtest.a (unit tests, tools)
# Everything is found by wildcard: adding a file needs no Makefile edit.

# Link order: callers before callees, so an upward call fails to link.
MODULES := fs repair volume keys
PKGS    := fuse3 liburing libisal libsodium
PYTHON  := /usr/bin/python3

SAN ?=
ifeq ($(SAN),asan)
BUILD    ?= build-asan
OPT      := -O1
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer
export ASAN_OPTIONS  ?= detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS ?= halt_on_error=1:print_stacktrace=1
else ifeq ($(SAN),tsan)
BUILD    ?= build-tsan
OPT      := -O1
SANFLAGS := -fsanitize=thread -fno-omit-frame-pointer
export TSAN_OPTIONS ?= halt_on_error=1
else ifeq ($(SAN),)
BUILD    ?= build
OPT      := -O2
else
$(error SAN must be empty, asan or tsan)
endif

WERROR ?= 1
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 $(if $(filter 1,$(WERROR)),-Werror)

# pkg-config is asked once, on first use (after deps-check has run, so a
# fresh machine gets the packages before their flags are read).
PKG_CFLAGS = $(eval PKG_CFLAGS := $$(shell pkg-config --cflags $(PKGS)))$(PKG_CFLAGS)
PKG_LIBS   = $(eval PKG_LIBS := $$(shell pkg-config --libs $(PKGS)))$(PKG_LIBS)

CPPFLAGS := -I. -D_FILE_OFFSET_BITS=64 -D_GNU_SOURCE
CFLAGS    = -std=gnu11 $(OPT) -g $(WARN) -MMD -MP $(PKG_CFLAGS) $(SANFLAGS) \
	$(XCFLAGS)
LDFLAGS   = $(SANFLAGS) $(XLDFLAGS)
LDLIBS    = $(PKG_LIBS) -lpthread

# --- sources and products -------------------------------------------------
src_of = $(filter-out %_main.c,$(wildcard $(1)/*.c))
obj_of = $(patsubst %.c,$(BUILD)/%.o,$(1))

MAIN_SRCS  := $(sort $(foreach m,$(MODULES),$(wildcard $(m)/*_main.c)))
LIB_MODS   := $(foreach m,$(MODULES),$(if $(call src_of,$(m)),$(m)))
LIBS       := $(foreach m,$(LIB_MODS),$(BUILD)/lib$(m).a)
TLIB_SRCS  := $(wildcard test/lib/*.c)
TLIB       := $(if $(TLIB_SRCS),$(BUILD)/libtest.a)
TOOL_SRCS  := $(wildcard test/tools/*.c)
UNIT_SRCS  := $(wildcard test/unit/*_test.c)

PROG  := $(if $(MAIN_SRCS),$(BUILD)/sixfold)
TOOLS := $(patsubst test/tools/%.c,$(BUILD)/tools/%,$(TOOL_SRCS))
UNITS := $(patsubst test/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRCS))

ALL_OBJS := $(call obj_of,$(MAIN_SRCS) $(TLIB_SRCS) $(TOOL_SRCS) \
	$(UNIT_SRCS) $(foreach m,$(LIB_MODS),$(call src_of,$(m))))

FORMAT_FILES := $(wildcard $(foreach d,keys volume fs repair test/unit \
	test/tools test/lib,$(d)/*.c $(d)/*.h))

export SIXFOLD_BIN   := $(abspath $(BUILD)/sixfold)
export SIXFOLD_TOOLS := $(abspath $(BUILD)/tools)

# --- build ----------------------------------------------------------------
.PHONY: all
all: $(LIBS) $(PROG) $(TOOLS) $(UNITS)
	$(if $(PROG),,@echo "note: no */*_main.c yet, $(BUILD)/sixfold not built")

$(BUILD)/%.o: %.c | deps-check
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# Test programs may write #include "check.h" as well as "test/lib/check.h".
$(BUILD)/test/%.o: CPPFLAGS += -Itest/lib

# Keep objects of tools and tests (make would delete them as intermediates).
.SECONDARY: $(ALL_OBJS)

# One archive per module.  $(BUILD)/lib<m>.objs holds the member list and
# is rewritten only when it changes, so deleting a source rebuilds the
# archive without the stale object.
define module_lib
$(BUILD)/lib$(1).objs: FORCE
	@mkdir -p $$(@D)
	@echo '$$(call obj_of,$$(call src_of,$(1)))' | cmp -s - $$@ || \
		echo '$$(call obj_of,$$(call src_of,$(1)))' > $$@
$(BUILD)/lib$(1).a: $$(call obj_of,$$(call src_of,$(1))) $(BUILD)/lib$(1).objs
	@rm -f $$@
	$$(AR) rcs $$@ $$(filter %.o,$$^)
endef
$(foreach m,$(LIB_MODS),$(eval $(call module_lib,$(m))))

$(BUILD)/libtest.a: $(call obj_of,$(TLIB_SRCS))
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/sixfold: $(call obj_of,$(MAIN_SRCS)) $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $(call obj_of,$(MAIN_SRCS)) $(LIBS) $(LDLIBS)

$(BUILD)/tools/%: $(BUILD)/test/tools/%.o $(TLIB) $(LIBS)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $< $(TLIB) $(LIBS) $(LDLIBS)

$(BUILD)/unit/%: $(BUILD)/test/unit/%.o $(TLIB) $(LIBS)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $< $(TLIB) $(LIBS) $(LDLIBS)

-include $(ALL_OBJS:.o=.d)

# --- dependencies ---------------------------------------------------------
# deps-check runs once per make invocation (a phony, order-only prerequisite
# of every object); it installs packages only when a cheap probe fails.
DEPS_PROBE := pkg-config --exists $(PKGS) && test -x /usr/bin/fusermount3 \
	&& $(PYTHON) -c 'import importlib.util as u, sys; \
		sys.exit(u.find_spec("pytest") is None)' \
	&& command -v fio && test -x /usr/lib/postgresql/15/bin/initdb \
	&& command -v clang-format

APT_PKGS := libfuse3-dev fuse3 liburing-dev libisal-dev libsodium-dev \
	pkg-config python3-pytest fio postgresql postgresql-contrib mandoc \
	gnuplot-nox clang-format e2fsprogs
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: deps deps-check
deps-check:
	@[ -n "$(DEPS_DONE)" ] || ( $(DEPS_PROBE) ) >/dev/null 2>&1 || { \
		echo "deps: something is missing, running make deps"; \
		$(MAKE) --no-print-directory deps; }

deps:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y \
		$(APT_PKGS) </dev/null

# --- tests ----------------------------------------------------------------
# Sub-makes started here skip the probe (DEPS_DONE=1 reaches them all).
SUBMAKE := $(MAKE) --no-print-directory DEPS_DONE=1

.PHONY: test test-unit test-int check-layering format-check format asan
# Run the steps one after another even under -j.
test: deps-check
	@+$(SUBMAKE) all
	@+$(SUBMAKE) check-layering
	@+$(SUBMAKE) format-check
	@+$(SUBMAKE) test-unit
	@+$(SUBMAKE) test-int
	@+$(SUBMAKE) test-uring

UNIT_TIMEOUT ?= 300
test-unit: $(UNITS)
	@pass=0; fail=0; skip=0; failed=; \
	for t in $(UNITS); do \
		n=$${t##*/}; \
		timeout -k 10 $(UNIT_TIMEOUT) $$t </dev/null; rc=$$?; \
		case $$rc in \
		0)  pass=$$((pass + 1)); echo "PASS $$n";; \
		77) skip=$$((skip + 1)); echo "SKIP $$n";; \
		124) fail=$$((fail + 1)); failed="$$failed $$n"; \
		    echo "FAIL $$n (timed out after $(UNIT_TIMEOUT) s)";; \
		*)  fail=$$((fail + 1)); failed="$$failed $$n"; \
		    echo "FAIL $$n (exit $$rc)";; \
		esac; \
	done; \
	echo "unit: $$pass passed, $$fail failed, $$skip skipped"; \
	if [ $$fail -ne 0 ]; then echo "unit: failed:$$failed"; exit 1; fi

# pytest exit 5 ("no tests collected") is success only while there are none.
test-int: all
	@$(PYTHON) -m pytest -q test/; rc=$$?; \
	if [ $$rc -eq 5 ] && [ -z "$$(find test -name 'test_*.py' -print -quit)" ]; \
	then echo "test-int: no test_*.py yet"; rc=0; fi; \
	exit $$rc

check-layering:
	@test/lib/check_layering.sh

format-check: | deps-check
	@$(if $(FORMAT_FILES),clang-format --dry-run -Werror $(FORMAT_FILES) \
		&& echo "format-check: ok ($(words $(FORMAT_FILES)) files)", \
		echo "format-check: no files")

format: | deps-check
	$(if $(FORMAT_FILES),clang-format -i $(FORMAT_FILES))

asan: deps-check
	@+$(SUBMAKE) SAN=asan all
	@+$(SUBMAKE) SAN=asan test-unit
	@+$(SUBMAKE) SAN=asan test-fuse
	@+$(SUBMAKE) SAN=asan test-uring

# The mount daemon built with the sanitizers (make asan) serving the POSIX
# suite, the model test and the mount commands: a memory error or a leak
# aborts it, and the tests see a daemon that did not exit 0.
.PHONY: test-fuse
test-fuse: all
	@$(PYTHON) -m pytest -q test/posix test/integration/test_fs_model.py \
		test/integration/test_fs_mount_cli.py \
		test/integration/test_repair_cli.py

# The POSIX suite and the model test again with the host's FUSE over
# io_uring switch on for the session (test/conftest.py puts it back): the
# daemon then takes its requests from io_uring queues (fs/fs_fuse.c).
# A kernel without the switch (before 6.14) cannot run them: said, not
# failed.
URING_SWITCH := /sys/module/fuse/parameters/enable_uring
.PHONY: test-uring
test-uring: all
	@if [ -e $(URING_SWITCH) ]; then \
		SIXFOLD_TEST_URING=1 $(PYTHON) -m pytest -q test/posix \
			test/integration/test_fs_model.py; \
	else echo "test-uring: this kernel has no $(URING_SWITCH);" \
		"FUSE over io_uring not tested"; fi

# --- demo: the README's quick start ---------------------------------------
# A demo volume under ./data (six zone folders, a generated key file), made
# once; mounted at ./data/mnt (allow_other, so the postgres user can use
# it); then how to point PostgreSQL at it.  DATA=DIR puts it elsewhere;
# `make demo-stop` unmounts it.
DATA ?= data
DEMO_ZONES := $(foreach z,0 1 2 3 4 5,$(DATA)/zones/z$(z))
DEMO_MNT := $(DATA)/mnt
PGBIN := /usr/lib/postgresql/15/bin
.PHONY: demo demo-stop
demo: all
	@mkdir -p $(DATA) $(DEMO_MNT)
	@test -s $(DATA)/demo.key || { umask 077; \
		head -c 32 /dev/urandom > $(DATA)/demo.key; \
		echo "demo: made key file $(DATA)/demo.key"; }
	@test -f $(DATA)/zones/z0/superblock || \
		$(BUILD)/sixfold mkfs --key-file $(DATA)/demo.key $(DEMO_ZONES)
	@mountpoint -q $(DEMO_MNT) || \
		$(BUILD)/sixfold mount --key-file $(DATA)/demo.key \
			-o allow_other $(DATA)/zones/z0 $(DEMO_MNT)
	@$(BUILD)/sixfold status $(DATA)/zones/z0 | head -3
	@df -h $(DEMO_MNT) | tail -1
	@echo; echo "demo: mounted at $(DEMO_MNT). To run PostgreSQL on it:"
	@echo "  chmod o+x $$(realpath $(DATA)) && mkdir $(DEMO_MNT)/pgdata && chown postgres $(DEMO_MNT)/pgdata"
	@echo "  runuser -u postgres -- $(PGBIN)/initdb -D $$(realpath $(DEMO_MNT))/pgdata"
	@echo "  runuser -u postgres -- $(PGBIN)/pg_ctl -D $$(realpath $(DEMO_MNT))/pgdata -l /tmp/pg.log start"
	@echo "demo: 'make demo-stop' (or '$(BUILD)/sixfold umount $(DEMO_MNT)') unmounts it"

demo-stop:
	@! mountpoint -q $(DEMO_MNT) || $(BUILD)/sixfold umount $(DEMO_MNT)

# --- benchmarks (root; not part of make test) -----------------------------
# test/bench/suite.py against $(BUILD)/sixfold (SIXFOLD_BIN).  It reads
# PEERS=1, BENCH_QUICK=1, BENCH_SECONDS, BENCH_ROUNDS, BENCH_OUT and
# BENCH_WORKDIR from the environment, so `make bench PEERS=1 BENCH_QUICK=1`
# works.
.PHONY: bench bench-memory
bench: all
	$(PYTHON) test/bench/suite.py

bench-memory: all
	$(PYTHON) test/bench/suite.py --memory

# --- install: the program, mount.sixfold for fstab, the man pages ---------
PREFIX ?= /usr/local
.PHONY: install
install: all
	install -D -m 755 $(BUILD)/sixfold $(DESTDIR)$(PREFIX)/bin/sixfold
	install -d $(DESTDIR)/sbin
	ln -sf $(PREFIX)/bin/sixfold $(DESTDIR)/sbin/mount.sixfold
	install -D -m 644 man/sixfold.8 $(DESTDIR)$(PREFIX)/share/man/man8/sixfold.8
	install -D -m 644 man/sixfold.5 $(DESTDIR)$(PREFIX)/share/man/man5/sixfold.5

.PHONY: clean FORCE
clean:
	rm -rf build build-asan build-tsan

FORCE:
