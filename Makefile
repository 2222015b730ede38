# Makefile -- builds Referral Broker: the protobuf-c code, the library, the tools, the tests.
#
#   make            libraries and tools into bin/
#   make test       every test; ends with "N passed, N failed"   (SANITIZE=1: ASan+UBSan build)
#   make test-faults  the long fault run: FAULT_RUNS (50) seeded runs of tests/faults (FAULT_SEED replays)
#   make demo       the end-to-end demonstration (adapters/demo.sh)
#   make bench      the benchmark (bench/run.sh; RABBITMQ=1 adds RabbitMQ): a table and bench/results/latest.json
#   make deps       installs the Debian packages the build needs (the targets above run it when needed)
#   make install    PREFIX=/usr/local DESTDIR=: tools, manual pages, example configs, systemd units
#   make uninstall  the same PREFIX and DESTDIR: removes what install wrote
#   make fuzz       runs each libFuzzer target for SECONDS (clang)
#   make format     rewrites the sources with clang-format
#   make lint       cppcheck and clang-tidy (.clang-tidy, .ci/cppcheck.supp) over every source: silent or fails
#   make test-valgrind  the end-to-end tests with every process they start under memcheck (tests/valgrind.sh)
#
# Generated code and objects live under build/ (build/release, or build/sanitize with SANITIZE=1).

PKGS := libzmq libprotobuf-c libsodium sqlite3 jansson inih libmicrohttpd libsystemd cmocka
DEBS := build-essential pkg-config libzmq3-dev protobuf-c-compiler libprotobuf-c-dev libsodium-dev \
        libsqlite3-dev sqlite3 libjansson-dev libinih-dev libmicrohttpd-dev libsystemd-dev libcmocka-dev clang \
        libclang-rt-14-dev clang-format clang-tidy cppcheck valgrind jq systemd groff-base man-db \
        protobuf-compiler python3-zmq python3-nacl python3-protobuf

PREFIX  ?= /usr/local
SECONDS ?= 60
FLAVOR  := $(if $(SANITIZE),sanitize,release)
BUILD   := build/$(FLAVOR)
BIN     := $(if $(SANITIZE),$(BUILD)/bin,bin)
GEN     := $(BUILD)/gen

PROTOS  := $(wildcard proto/*.proto)
GEN_C   := $(patsubst proto/%.proto,$(GEN)/%.pb-c.c,$(PROTOS))
GEN_H   := $(GEN_C:.c=.h)
# The layers, from the bottom: each is a folder and a static library, and its code sees only its own
# headers and those of the layers below it, so that an include that points up fails to build. The libraries
# are linked top first; since a link may still resolve a call that points up (when the program pulled the
# callee in anyway), tests/integration/layers_test.sh reads the libraries' symbols for one. broker and
# adapters are the programs' own code, side by side above the client library.
LAYERS  := common keys proto ledger client broker adapters
dir_common := common
dir_keys   := keys
dir_proto  := proto
dir_ledger := ledger
dir_client := adapters/client
dir_broker := broker
dir_adapters := adapters
INC_common := -Icommon
INC_keys   := $(INC_common) -Ikeys
INC_proto  := $(INC_keys) -Iproto -I$(GEN)
INC_ledger := $(INC_proto) -Iledger
INC_client := $(INC_ledger) -Iadapters/client
INC_broker := $(INC_client) -Ibroker
INC_adapters := $(INC_client) -Iadapters
INC_all    := $(INC_client) -Ibroker -Iadapters
LIBDIRS := $(foreach l,$(LAYERS),$(dir_$(l)))
# Every */referral-NAME.c is the main of the tool bin/referral-NAME; every other .c is in its layer's library.
TOOL_SRC := $(foreach d,$(LIBDIRS),$(wildcard $(d)/referral-*.c))
TOOLS   := $(notdir $(basename $(TOOL_SRC)))
layer_src = $(filter-out $(TOOL_SRC),$(wildcard $(dir_$(1))/*.c))
layer_obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(call layer_src,$(1))) \
            $(if $(filter proto,$(1)),$(patsubst $(GEN)/%.c,$(BUILD)/obj/gen/%.o,$(GEN_C)))
LIB_SRC := $(foreach l,$(LAYERS),$(call layer_src,$(l)))
LIB_OBJ := $(foreach l,$(LAYERS),$(call layer_obj,$(l)))
# Linked top first: a library may use only those after it.
LIBS    := $(foreach l,adapters broker client ledger proto keys common,$(BUILD)/lib/lib$(l).a)
# tests/unit: code in one process; tests/system: tests that start real brokers, adapters and tools.
UNIT    := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/*_test.c))
SYSTEM  := $(patsubst tests/system/%.c,$(BUILD)/tests/%,$(wildcard tests/system/*_test.c))
FAULTS  := $(BUILD)/tests/fault_test
# The benchmark's programs (make bench); make test builds them so that they keep compiling.
BENCH   := $(patsubst bench/%.c,$(BUILD)/bench/%,$(filter-out bench/rabbitmq_load.c,$(wildcard bench/*.c)))
FUZZ    := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/*_fuzz.c))
FUZZ_OBJ := $(patsubst %.c,build/fuzz/obj/%.o,$(LIB_SRC)) $(patsubst $(GEN)/%.c,build/fuzz/obj/gen/%.o,$(GEN_C))
SOURCES := $(shell find common keys proto ledger broker adapters tests bench -name '*.[ch]' 2>/dev/null)

WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes -Wvla
CFLAGS  ?= -O2 -g
ifdef SANITIZE
CFLAGS  := -O1 -g -fno-omit-frame-pointer
SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all
endif
CPPFLAGS += -std=c11 -D_DEFAULT_SOURCE -MMD -MP
ALL_CFLAGS = $(CPPFLAGS) $(INC) $(CFLAGS) $(SAN) $(WARN) $(PKG_CFLAGS)
LDLIBS   = $(PKG_LIBS) -lpthread -lm

.PHONY: all deps test test-faults demo bench clean install uninstall fuzz format lint test-valgrind
# Keep objects that only feed a link, so a second make does not rebuild them.
.SECONDARY:
all: $(addprefix $(BIN)/,$(TOOLS))

# The package check writes the flags once; a missing library or tool installs the packages first.
# tests/integration/python_client_test.sh needs protoc and Debian's Python modules for /usr/bin/python3.
ifeq ($(filter deps clean format,$(MAKECMDGOALS)),)
include $(BUILD)/config.mk
endif
$(BUILD)/config.mk: Makefile
	@mkdir -p $(@D)
	@if ! command -v $(CC) >/dev/null || ! command -v pkg-config >/dev/null || ! pkg-config --exists $(PKGS) || \
	    ! command -v protoc-c >/dev/null || ! command -v clang >/dev/null || \
	    ! command -v clang-format >/dev/null || ! command -v jq >/dev/null || ! command -v clang-tidy >/dev/null || \
	    ! command -v cppcheck >/dev/null || ! command -v valgrind >/dev/null || \
	    ! command -v systemd-analyze >/dev/null || ! command -v groff >/dev/null || ! command -v protoc >/dev/null || \
	    ! /usr/bin/python3 -c 'import zmq, nacl, google.protobuf' 2>/dev/null; then $(MAKE) --no-print-directory deps; fi
	@printf 'PKG_CFLAGS := %s\nPKG_LIBS := %s\n' "$$(pkg-config --cflags $(PKGS))" \
	    "$$(pkg-config --libs $(PKGS))" > $@

deps:
	@missing=""; for p in $(DEBS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -Iproto $<

# tests/unit/pbjson_types.proto: every field type, for the JSON converter's test and fuzz target only.
$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: tests/unit/%.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -Itests/unit $<
$(BUILD)/tests/pbjson_test: $(BUILD)/obj/gen/pbjson_types.pb-c.o
$(BUILD)/obj/tests/unit/pbjson_test.o build/fuzz/obj/tests/fuzz/json_fuzz.o: $(GEN)/pbjson_types.pb-c.h
build/fuzz/json_fuzz: build/fuzz/obj/gen/pbjson_types.pb-c.o

$(BUILD)/obj/gen/%.o: $(GEN)/%.c | $(GEN_H)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(INC) $(CFLAGS) $(SAN) -Wall -Wextra -Werror $(PKG_CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.c | $(GEN_H)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# Each object sees the headers of its layer and those below it; tools, tests and benchmarks see them all.
$(foreach l,$(LAYERS),$(eval $(BUILD)/obj/$(dir_$(l))/%.o: INC = $(INC_$(l))))
$(foreach t,$(TOOL_SRC),$(eval $(BUILD)/obj/$(basename $(t)).o: INC = $(INC_all)))
$(BUILD)/obj/tests/%.o $(BUILD)/obj/bench/%.o: INC = $(INC_all) -Itests/unit
$(BUILD)/obj/gen/%.o: INC = -I$(GEN)

define layer_rule
$(BUILD)/lib/lib$(1).a: $(call layer_obj,$(1))
	@mkdir -p $$(@D)
	@rm -f $$@
	$$(AR) rcs $$@ $$^
endef
$(foreach l,$(LAYERS),$(eval $(call layer_rule,$(l))))

define tool_rule
$(BIN)/$(notdir $(basename $(1))): $(BUILD)/obj/$(basename $(1)).o $(LIBS)
	@mkdir -p $$(@D)
	$$(CC) $$(CFLAGS) $$(SAN) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach t,$(TOOL_SRC),$(eval $(call tool_rule,$(t))))

# Static patterns: a test's object is the one of its own folder, never one left from where a test was.
$(UNIT): $(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIBS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)
$(SYSTEM): $(BUILD)/tests/%: $(BUILD)/obj/tests/system/%.o $(LIBS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)
$(FAULTS): $(BUILD)/obj/tests/faults/fault_test.o $(LIBS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)

# Benchmark programs (bench/*.c, run by make bench): linked like the tools.
$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIBS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)
# The RabbitMQ reference (make bench RABBITMQ=1) alone needs librabbitmq, which bench/rabbitmq.sh installs
# when asked: its flags are for its own object and link only (private: not passed on to prerequisites).
$(BUILD)/obj/bench/rabbitmq_load.o: private CPPFLAGS += $(shell pkg-config --cflags librabbitmq)
$(BUILD)/bench/rabbitmq_load: private LDLIBS += $(shell pkg-config --libs librabbitmq)

# Fuzz targets: clang, libFuzzer, ASan and UBSan, whatever the flavor.
FUZZ_FLAGS = $(CPPFLAGS) $(INC_all) -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -Wall -Wextra -Werror $(PKG_CFLAGS)
build/fuzz/obj/gen/%.o: $(GEN)/%.c | $(GEN_H)
	@mkdir -p $(@D)
	clang $(FUZZ_FLAGS) -c $< -o $@
build/fuzz/obj/%.o: %.c | $(GEN_H)
	@mkdir -p $(@D)
	clang $(FUZZ_FLAGS) -c $< -o $@
build/fuzz/%: build/fuzz/obj/tests/fuzz/%.o $(FUZZ_OBJ)
	clang -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -o $@ $^ $(LDLIBS)

test: all $(UNIT) $(SYSTEM) $(FAULTS) $(FUZZ) $(BENCH)
	@BIN=$(BIN) BUILD=$(BUILD) FUZZ_SECONDS=$(if $(FUZZ_SECONDS),$(FUZZ_SECONDS),4) TEST_TIMEOUT=900 \
	    tests/run.sh $(UNIT) $(SYSTEM) $(FAULTS) $(wildcard tests/integration/*_test.sh) $(addprefix fuzz:,$(FUZZ)) format:

# The long fault run: FAULT_RUNS seeded runs (FAULT_SEED replays one), figures in its log.
FAULT_RUNS ?= 50
test-faults: all $(FAULTS)
	@BIN=$(BIN) BUILD=$(BUILD) FAULT_RUNS=$(FAULT_RUNS) TEST_TIMEOUT=$$(( $(FAULT_RUNS) * 120 + 600 )) \
	    tests/run.sh $(FAULTS); rc=$$?; grep '^# fault runs\|^# dead letters\|^# events' $(BUILD)/test-logs/fault_test.log; \
	    exit $$rc

# Static analysis: both tools must print nothing. Generated protobuf-c code is read, never checked.
# bench/rabbitmq_load.c needs librabbitmq's headers, installed only by make bench RABBITMQ=1.
LINT_SRC := $(filter-out $(if $(wildcard /usr/include/amqp.h),,bench/rabbitmq_load.c),$(filter %.c,$(SOURCES)))
LINT_FLAGS = $(filter-out -MMD -MP,$(CPPFLAGS)) $(INC_all) -Itests/unit $(PKG_CFLAGS)
lint: $(GEN_H) $(GEN)/pbjson_types.pb-c.h
	cppcheck --quiet --error-exitcode=1 --inline-suppr --suppressions-list=.ci/cppcheck.supp -j$$(nproc) \
	    --enable=warning,style,performance,portability --std=c11 -D_DEFAULT_SOURCE \
	    -DPROTOBUF_C_VERSION_NUMBER=1004001 -DPROTOBUF_C_MIN_COMPILER_VERSION=1000000 \
	    $(INC_all) -Itests/unit --template='{file}:{line}: {severity} {id}: {message}' $(LINT_SRC)
	@echo "clang-tidy: $(words $(LINT_SRC)) files"
	@printf '%s\n' $(LINT_SRC) | xargs -P$$(nproc) -n1 bash -c 'set -o pipefail; \
	    clang-tidy --quiet "$$0" -- $(LINT_FLAGS) 2>&1 | { grep -v "^[0-9]* warnings\? generated\.$$" || true; }' \
	    || { echo "clang-tidy: findings above"; exit 1; }

# The tests that start a broker, adapters and tools end to end; their processes run under valgrind.
VG_TESTS := $(BUILD)/tests/broker_test $(BUILD)/tests/adapter_test tests/integration/tools_test.sh \
            tests/integration/deployment_test.sh
test-valgrind: all $(filter $(BUILD)/%,$(VG_TESTS))
	@BIN=$(BIN) BUILD=$(BUILD) tests/valgrind.sh $(VG_TESTS)

fuzz: $(FUZZ)
	@for f in $(FUZZ); do n=$$(basename $$f); mkdir -p build/fuzz/corpus/$$n; \
	    echo "fuzzing $$n for $(SECONDS)s"; \
	    $$f -max_total_time=$(SECONDS) -timeout=10 build/fuzz/corpus/$$n tests/fuzz/corpus/$$n || exit 1; done

demo: all
	@BIN=$(BIN) adapters/demo.sh

bench: all
	@BIN=$(BIN) BUILD=$(BUILD) RABBITMQ=$(RABBITMQ) bench/run.sh

# Where install puts things (docs/OPERATIONS.md). The units name $(BINDIR) in ExecStart; systemd reads
# units from /usr/local/lib/systemd/system as well as /etc/systemd/system.
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/referral-broker
UNITDIR ?= $(PREFIX)/lib/systemd/system
EXAMPLES := broker/dist/broker.conf $(wildcard adapters/dist/*.conf)
UNITS   := broker/dist/referral-broker.service.in adapters/dist/referral-adapter@.service.in

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(UNITDIR)
	install -m 0755 $(addprefix $(BIN)/,$(TOOLS)) $(DESTDIR)$(BINDIR)/
	for t in $(TOOLS); do broker/dist/help-to-man.sh $(BIN)/$$t >$(DESTDIR)$(MANDIR)/man1/$$t.1 && \
	    chmod 0644 $(DESTDIR)$(MANDIR)/man1/$$t.1 || exit 1; done
	install -m 0644 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/examples/
	for u in $(UNITS); do f=$(DESTDIR)$(UNITDIR)/$$(basename $$u .in); \
	    sed 's|@BINDIR@|$(BINDIR)|g' $$u >$$f && chmod 0644 $$f || exit 1; done

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(TOOLS)) $(patsubst %,$(DESTDIR)$(MANDIR)/man1/%.1,$(TOOLS)) \
	    $(patsubst %.in,$(DESTDIR)$(UNITDIR)/%,$(notdir $(UNITS)))
	rm -rf $(DESTDIR)$(DOCDIR)

format:
	clang-format -i --style=file $(SOURCES)

clean:
	rm -rf build bin

-include $(LIB_OBJ:.o=.d) $(FUZZ_OBJ:.o=.d) $(patsubst %.c,build/fuzz/obj/%.d,$(wildcard tests/fuzz/*.c)) \
    $(patsubst %.c,$(BUILD)/obj/%.d,$(TOOL_SRC) $(wildcard tests/unit/*.c tests/system/*.c tests/faults/*.c bench/*.c))
