# smtpgate: a plain Makefile. `make run` starts the demo, `make check` runs
# every test; both install the Debian packages they need first.

CC	?= cc
CFLAGS	?= -O2 -g
WARN	 = -std=c17 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CPPFLAGS += -D_GNU_SOURCE -MMD -MP
LDLIBS	 = -lssl -lcrypto -lev -linih
BUILD	?= build

ifeq ($(SANITIZE),1)
BUILD	 = build-san
CFLAGS	+= -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	   -fno-omit-frame-pointer
LDFLAGS	+= -fsanitize=address,undefined
endif

SRCS	 = proxy/buf.c proxy/log.c proxy/body.c proxy/smtp.c proxy/iptable.c \
	   proxy/endpoint.c \
	   proxy/session.c proxy/listener.c tls/tls.c config/config.c
MAIN	 = proxy/main.c
UNIT	 = tests/unit/main.c tests/unit/test_buf.c tests/unit/test_smtp.c \
	   tests/unit/test_config.c tests/unit/test_tls.c tests/unit/test_iptable.c

OBJS	 = $(SRCS:%.c=$(BUILD)/%.o)
UNIT_OBJS = $(UNIT:%.c=$(BUILD)/%.o)
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)

.PHONY: all run check unit integration deps deps-test clean

all: $(BUILD)/smtpgate

$(BUILD)/smtpgate: $(OBJS) $(BUILD)/proxy/main.o
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $(CHECK_CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) -c -o $@ $<

$(BUILD)/unit-tests: $(OBJS) $(UNIT_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(CHECK_LIBS)

deps:
	@scripts/install-deps build

deps-test:
	@scripts/install-deps test

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
	@$(MAKE) --no-print-directory integration

clean:
	rm -rf build build-san

-include $(OBJS:.o=.d) $(UNIT_OBJS:.o=.d) $(BUILD)/proxy/main.d
