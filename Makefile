# fedsm - one Makefile: build, test, asan, fuzz, bench, demo, install, format.
# Feature switches (override on the command line: make ARCH= OPT=-O0):
ARCH   ?= -march=native
OPT    ?= -O2
BUILD  ?= build
PREFIX ?= /usr/local
DESTDIR ?=
FUZZ_SECONDS ?= 60

CC      ?= cc
PKGS    := libzmq msgpack openblas libzstd libjpeg libpng zlib
# Debian packages each target needs (installed when missing; see `deps` below).
DEB_BUILD := build-essential pkg-config libzmq3-dev libmsgpack-dev libopenblas-dev \
             libzstd-dev zstd libjpeg62-turbo-dev libpng-dev zlib1g-dev
DEB_TEST  := $(DEB_BUILD) python3 python3-numpy python3-msgpack python3-zstandard python3-pil wordnet-base python3-nltk \
             python3-torch parallel \
             clang libclang-rt-14-dev
DEB_DEMO  := $(DEB_BUILD) gnuplot-nox wordnet-base
DEB_BENCH := $(DEB_BUILD) python3-torch python3-numpy

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
SAN     ?=
CFLAGS  ?= $(OPT) -g $(ARCH)
# lib/ is layered (lib/README.md); every layer is on the include path, so a file includes
# a header by its name alone ("record.h") and can move between layers without edits.
LIB_DIRS := $(sort $(dir $(wildcard lib/*/*.c lib/*/*.h)))
LIB_INC  := $(patsubst %/,-I%,$(LIB_DIRS))
LIB_H    := $(wildcard lib/*/*.h)
CFLAGS  += $(SAN) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(LIB_INC) $(PKG_CFLAGS) -pthread
LDLIBS  += $(PKG_LIBS) -lm -pthread $(SAN)

LIB_SRC  := $(sort $(wildcard lib/*/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOLS    := $(patsubst tools/%.c,%,$(sort $(wildcard tools/*.c)))
TOOL_BIN := $(TOOLS:%=$(BUILD)/bin/%)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
HELPER_SRC := $(sort $(wildcard tests/helpers/*.c))
HELPER_BIN := $(HELPER_SRC:tests/helpers/%.c=$(BUILD)/helpers/%)
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all test check asan fuzz fuzz-build bench demo install format clean deps \
        deps-test deps-demo deps-bench clip-weights clip-fixtures fixtures

all: $(BUILD)/libfedsm.a $(TOOL_BIN) $(UNIT_BIN) $(HELPER_BIN) $(BENCH_BIN) $(BUILD)/bin/gen-demo

$(BUILD)/lib/%.o: lib/%.c $(LIB_H)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libfedsm.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/%: tools/%.c $(BUILD)/libfedsm.a $(LIB_H) | $(BUILD)/bin
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libfedsm.a $(LDLIBS)

$(BUILD)/bin/gen-demo: data/gen-demo.c | $(BUILD)/bin
	$(CC) $(CFLAGS) -o $@ $< -lm

$(BUILD)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(BUILD)/libfedsm.a | $(BUILD)/tests
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libfedsm.a $(LDLIBS)

$(BUILD)/helpers/%: tests/helpers/%.c $(wildcard tests/unit/*.h) $(BUILD)/libfedsm.a | $(BUILD)/helpers
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libfedsm.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libfedsm.a | $(BUILD)/bench
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libfedsm.a $(LDLIBS)

$(BUILD)/bin $(BUILD)/tests $(BUILD)/helpers $(BUILD)/bench:
	mkdir -p $@

# ---- set-up: install missing Debian packages (as root), or say the exact command ----
define install_missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' \
	    || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing) \
	      >/tmp/fedsm-apt.log 2>&1 || { echo "apt-get failed, see /tmp/fedsm-apt.log"; exit 1; }; \
	  else echo "missing Debian packages; run: sudo apt-get install -y$$missing"; exit 1; fi; \
	fi
endef

deps:
	$(call install_missing,$(DEB_BUILD))
deps-test:
	$(call install_missing,$(DEB_TEST))
deps-demo:
	$(call install_missing,$(DEB_DEMO))
deps-bench:
	$(call install_missing,$(DEB_BENCH))

# ---- tests ----
test: deps-test
	$(MAKE) --no-print-directory all fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) BUILD=$(BUILD) tests/run.sh

check: test

mutants: deps-test  # tests/mutants.sh: small bugs of tests/mutants.txt, one at a time (slow; not in test)
	tests/mutants.sh

asan: deps-test
	$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" all
	FUZZ_SECONDS=0 BUILD=build-asan ASAN_OPTIONS=detect_leaks=1 tests/run.sh

FUZZ_CFLAGS := -O1 -g $(ARCH) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
               -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(LIB_INC) $(PKG_CFLAGS)
# A fuzz target links the lib/ sources of the headers it includes, found by following the
# #include lines (tests/fuzz/deps.sh), so the lists never go stale when lib/ changes.
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/deps.sh $(LIB_SRC) $(LIB_H)
	mkdir -p $(BUILD)/fuzz
	clang $(FUZZ_CFLAGS) -o $@ $< $$(tests/fuzz/deps.sh $<) $(PKG_LIBS) -lm -pthread

fuzz-build: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
fuzz: deps-test fuzz-build
	tests/fuzz/run.sh $(BUILD)/fuzz/fuzz_record $${FUZZ_SECONDS:-3600}
	tests/fuzz/run.sh $(BUILD)/fuzz/fuzz_weights $${FUZZ_SECONDS:-3600} tests/fuzz/corpus-weights
	tests/fuzz/run.sh $(BUILD)/fuzz/fuzz_methods $${FUZZ_SECONDS:-3600} tests/fuzz/corpus-methods
	tests/fuzz/run.sh $(BUILD)/fuzz/fuzz_readers $${FUZZ_SECONDS:-3600} tests/fuzz/corpus-readers

# ---- benchmarks (not tests): ratios against PyTorch measured in the same run ----
bench: deps-bench
	$(MAKE) --no-print-directory all
	BUILD=$(BUILD) bench/run.sh

# ---- the main job on the embedded default data ----
# DATA reaches demo.sh in the environment (DEMO_DATA, taken unexpanded), never through the
# shell's parsing: a path with spaces, quotes or ';' stays one value and nothing of it runs.
# RUN (DEMO_RUN) likewise: the demo's run folder (default runs/demo, runs/demo-NAME with DATA).
demo: export DEMO_DATA := $(value DATA)
demo: export DEMO_RUN := $(if $(value RUN),$(value RUN),$(value DEMO_RUN))
demo: deps-demo
	$(MAKE) --no-print-directory all
	BUILD=$(BUILD) pipelines/demo.sh

# ---- reference fixtures (needs python3-torch; the committed fixtures make this optional) ----
fixtures: deps-bench clip-fixtures
	/usr/bin/python3 tests/make_fixtures.py
	/usr/bin/python3 tests/fuzz/make_corpus.py
	/usr/bin/python3 tests/fuzz/make_corpus_methods.py
	/usr/bin/python3 tests/fuzz/make_corpus_readers.py

clip-weights:
	data/get-clip-weights.sh

# tiny CLIP fixtures of tests/fixtures/clip (committed; needs python3-torch to remake)
clip-fixtures: deps-bench
	/usr/bin/python3 tests/make_clip_fixtures.py

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/fedsm \
	  $(DESTDIR)$(PREFIX)/share/fedsm/pipelines $(DESTDIR)$(PREFIX)/share/fedsm/data \
	  $(DESTDIR)$(PREFIX)/share/fedsm/python/examples
	install -m 755 $(TOOL_BIN) $(BUILD)/bin/gen-demo $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(BUILD)/libfedsm.a $(DESTDIR)$(PREFIX)/lib/
	install -m 644 $(LIB_H) $(DESTDIR)$(PREFIX)/include/fedsm/
	install -m 755 pipelines/*.sh $(DESTDIR)$(PREFIX)/share/fedsm/pipelines/
	cp -r data/. $(DESTDIR)$(PREFIX)/share/fedsm/data/
	install -m 644 python/fedsm.py $(DESTDIR)$(PREFIX)/share/fedsm/python/
	install -m 755 python/examples/*.py $(DESTDIR)$(PREFIX)/share/fedsm/python/examples/

format:
	clang-format -i lib/*/*.c lib/*/*.h tools/*.c tests/unit/*.c tests/unit/*.h tests/fuzz/*.c $(wildcard bench/*.c)

clean:
	rm -rf build build-asan
