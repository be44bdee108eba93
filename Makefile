# smtpgate: a plain Makefile. `make run` starts the demo, `make check` runs
# every test; both install the Debian packages they need first.

CC	?= cc
CFLAGS	?= -O2 -g
WARN	 = -std=c17 -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes \
	   -Wmissing-prototypes
# Hardened like a distribution build: fortified libc calls, stack
# protector, position-independent executable, read-only relocations.
HARDEN	 = -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE
HARDEN_LD = -pie -Wl,-z,relro,-z,now
CPPFLAGS += -D_GNU_SOURCE -MMD -MP
LDLIBS	 = -lssl -lcrypto -lev -linih -pthread
BUILD	?= build

# CI builds with WERROR=1: a warning fails the build.
ifeq ($(WERROR),1)
WARN	+= -Werror
endif

ifeq ($(SANITIZE),1)
BUILD	 = build-san
CFLAGS	+= -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	   -fno-omit-frame-pointer
LDFLAGS	+= -fsanitize=address,undefined
endif

SRCS	 = proxy/buf.c proxy/log.c proxy/log_syslog.c proxy/body.c proxy/smtp.c proxy/smtp_parse.c \
	   proxy/smtp_egress.c proxy/iptable.c \
	   proxy/proxyproto.c \
	   proxy/endpoint.c \
	   proxy/session.c proxy/listener.c proxy/gen.c proxy/worker.c \
	   proxy/metrics.c proxy/http.c proxy/health.c proxy/metrics_server.c \
	   tls/tls.c tls/ticket.c config/config.c
MAIN	 = proxy/main.c
UNIT	 = tests/unit/main.c tests/unit/test_buf.c tests/unit/test_smtp.c \
	   tests/unit/test_config.c tests/unit/test_tls.c tests/unit/test_iptable.c \
	   tests/unit/test_proxyproto.c tests/unit/test_log.c tests/unit/test_metrics.c

OBJS	 = $(SRCS:%.c=$(BUILD)/%.o)
UNIT_OBJS = $(UNIT:%.c=$(BUILD)/%.o)
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)

.PHONY: all run check check-valgrind check-container unit integration deps deps-test \
	deps-container clean bench bench-tools

all: $(BUILD)/smtpgate

$(BUILD)/smtpgate: $(OBJS) $(BUILD)/proxy/main.o
	$(CC) $(LDFLAGS) $(HARDEN_LD) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(HARDEN) $(CFLAGS) $(CPPFLAGS) $(CHECK_CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(HARDEN) $(CFLAGS) $(CPPFLAGS) -c -o $@ $<

$(BUILD)/unit-tests: $(OBJS) $(UNIT_OBJS)
	$(CC) $(LDFLAGS) $(HARDEN_LD) -o $@ $^ $(LDLIBS) $(CHECK_LIBS)

deps:
	@scripts/install-deps build

deps-test:
	@scripts/install-deps test

deps-container:
	@scripts/install-deps container

# The demo: gateway on 10465 (implicit), 10587 and 12525 (STARTTLS) in front
# of tests/backend.py, which prints every message it receives.
run: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo $(BUILD)/smtpgate

unit: $(BUILD)/unit-tests
	$(BUILD)/unit-tests

integration: $(BUILD)/smtpgate
	SMTPGATE_BIN=$(BUILD)/smtpgate python3 tests/integration/run.py

check: deps-test
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory fuzz-replay
	@$(MAKE) --no-print-directory integration

# The unit tests and the integration suite with the gateway under valgrind;
# any report fails the target. Slow: CI runs it, `make check` does not.
check-valgrind: deps-test
	@$(MAKE) --no-print-directory build/unit-tests build/smtpgate
	CK_FORK=no valgrind -q --leak-check=full --error-exitcode=1 \
	    build/unit-tests
	rm -rf build/valgrind && mkdir -p build/valgrind
	VALGRIND_LOGS=$(CURDIR)/build/valgrind SKIP_50MB=1 \
	    SMTPGATE_BIN=tests/valgrind-smtpgate python3 tests/integration/run.py
	@bad=$$(find build/valgrind -name '*.log' -size +0); \
	if [ -n "$$bad" ]; then for f in $$bad; do \
	    echo "== $$(cat $${f%.log}.cmd 2>/dev/null)"; cat $$f; done; \
	    echo "valgrind reported errors"; exit 1; fi

# The images and the compose example (docker/), built and run with podman:
# needs root. Not part of `make check`; CI runs it as its own step.
check-container: deps-container
	tests/container/run

# The benchmark: smtpgate side by side with stunnel, hitch, HAProxy and
# nginx's mail proxy (tests/bench/README.md). Not part of `make check`.
BENCH_TOOLS = $(BUILD)/bench/loadgen $(BUILD)/bench/sink $(BUILD)/bench/floor

$(BUILD)/bench/%: tests/bench/%.c tests/bench/netutil.c tests/bench/netutil.h
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(HARDEN) $(CFLAGS) -D_GNU_SOURCE $(HARDEN_LD) -o $@ \
	    $< tests/bench/netutil.c -lssl -lcrypto

bench-tools: $(BENCH_TOOLS)

bench:
	@scripts/install-deps bench
	@$(MAKE) --no-print-directory all bench-tools
	BUILD=$(BUILD) tests/bench/run

clean:
	rm -rf build build-san build-fuzz

include tests/fuzz/fuzz.mk

-include $(OBJS:.o=.d) $(UNIT_OBJS:.o=.d) $(BUILD)/proxy/main.d
