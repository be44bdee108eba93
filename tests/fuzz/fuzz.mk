# Fuzz targets (tests/fuzz/). Included from the top Makefile, after SRCS and
# OBJS are defined; it uses CC, WARN, HARDEN, CFLAGS, CPPFLAGS, LDFLAGS,
# HARDEN_LD, LDLIBS, BUILD, SRCS and OBJS from there. Each target links an
# archive of all the modules, so it takes only the files it needs, however
# they are split.
#
#   make fuzz-replay	every corpus (and tests/fuzz/crashes/NAME/, if there)
#			through each target built with $(CC) and a replay
#			main(); fails if any input breaks an invariant
#   make fuzz		each target with libFuzzer, ASan and UBSan (clang) for
#			FUZZ_SECONDS (default 60); new inputs are kept in
#			build-fuzz/corpus/NAME, crashes in build-fuzz/crashes/NAME
#   make fuzz-clean
#
# SMTPGATE_FUZZ_IGNORE=name,name turns invariants off (each fuzz_NAME.c
# lists its own), to look past a known finding while it is open.

FUZZ_TARGETS	 = fuzz_smtp_tracker fuzz_smtp_reply fuzz_body fuzz_config \
		   fuzz_proxyproto
FUZZ_DIR	 = tests/fuzz
FUZZ_SECONDS	?= 60
FUZZ_CC		?= clang
FUZZ_BUILD	?= build-fuzz
FUZZ_CFLAGS	?= -O1 -g
FUZZ_SAN	 = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
		   -fno-omit-frame-pointer

# Each target's link flags, longest input and dictionary. The tracker
# harness checks every byte the tracker writes; the config harness keeps
# getaddrinfo() from sending DNS queries.
FUZZ_LD_fuzz_smtp_tracker	= -Wl,--wrap=buf_append -Wl,--wrap=buf_move
FUZZ_LD_fuzz_config		= -Wl,--wrap=getaddrinfo
FUZZ_MAXLEN_fuzz_smtp_tracker	= 16384
FUZZ_MAXLEN_fuzz_smtp_reply	= 10240
FUZZ_MAXLEN_fuzz_body		= 8192
FUZZ_MAXLEN_fuzz_config		= 8192
FUZZ_MAXLEN_fuzz_proxyproto	= 2200
FUZZ_DICT_fuzz_smtp_tracker	= $(FUZZ_DIR)/smtp.dict
FUZZ_DICT_fuzz_smtp_reply	= $(FUZZ_DIR)/smtp.dict
FUZZ_DICT_fuzz_body		= $(FUZZ_DIR)/smtp.dict
FUZZ_DICT_fuzz_config		= $(FUZZ_DIR)/config.dict
FUZZ_DICT_fuzz_proxyproto	= $(FUZZ_DIR)/proxy.dict

FUZZ_REPLAY	 = $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
FUZZ_BINS	 = $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%)
FUZZ_COMMON	 = $(FUZZ_DIR)/fuzz
FUZZ_LIB	 = $(BUILD)/fuzz/libsmtpgate.a
FUZZ_SAN_LIB	 = $(FUZZ_BUILD)/libsmtpgate.a

.PHONY: fuzz fuzz-replay fuzz-clean fuzz-toolchain $(FUZZ_TARGETS:%=fuzz-run-%)

# The modules: the normal build's objects (OBJS) for the replay binaries;
# for the fuzzers, SRCS built with clang, the sanitizers and libFuzzer's
# coverage instrumentation.
$(FUZZ_LIB): $(OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

$(FUZZ_SAN_LIB): $(SRCS:%.c=$(FUZZ_BUILD)/%.o)
	rm -f $@ && $(AR) rcs $@ $^

# $(1): a target.
define FUZZ_template
$(BUILD)/fuzz/$(1): $(BUILD)/$(FUZZ_DIR)/$(1).o $(BUILD)/$(FUZZ_COMMON).o \
    $(BUILD)/$(FUZZ_DIR)/replay.o $(FUZZ_LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) $$(HARDEN_LD) $(FUZZ_LD_$(1)) -o $$@ $$^ $$(LDLIBS)

$(FUZZ_BUILD)/$(1): $(FUZZ_BUILD)/$(FUZZ_DIR)/$(1).o \
    $(FUZZ_BUILD)/$(FUZZ_COMMON).o $(FUZZ_SAN_LIB)
	$$(FUZZ_CC) $$(FUZZ_SAN) -fsanitize=fuzzer $(FUZZ_LD_$(1)) -o $$@ $$^ \
	    $$(LDLIBS)

# One run; its exit status is kept for the summary, so that every target
# runs even when one finds something.
fuzz-run-$(1): $(FUZZ_BUILD)/$(1)
	@mkdir -p $(FUZZ_BUILD)/corpus/$(1) $(FUZZ_BUILD)/crashes/$(1)
	@echo "fuzz: $(1) for $$(FUZZ_SECONDS)s"
	@$(FUZZ_BUILD)/$(1) -max_total_time=$$(FUZZ_SECONDS) \
	    -max_len=$(FUZZ_MAXLEN_$(1)) -dict=$(FUZZ_DICT_$(1)) \
	    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_BUILD)/crashes/$(1)/ \
	    $(FUZZ_BUILD)/corpus/$(1) $(FUZZ_DIR)/corpus/$(1) \
	    >$(FUZZ_BUILD)/$(1).log 2>&1; echo $$$$? >$(FUZZ_BUILD)/$(1).status
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call FUZZ_template,$(t))))

$(FUZZ_BUILD)/%.o: %.c | fuzz-toolchain
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(WARN) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
	    $(CPPFLAGS) -c -o $@ $<

fuzz-replay: $(FUZZ_REPLAY)
	@fail=0; for t in $(FUZZ_TARGETS); do \
	    set -- $(FUZZ_DIR)/corpus/$$t; \
	    if [ -d $(FUZZ_DIR)/crashes/$$t ]; then \
	        set -- "$$@" $(FUZZ_DIR)/crashes/$$t; fi; \
	    $(BUILD)/fuzz/$$t "$$@" || { echo "fuzz-replay: $$t FAILED"; \
	        fail=1; }; \
	done; exit $$fail

# Whether $(FUZZ_CC) can link a libFuzzer target at all.
fuzz-toolchain:
	@if ! echo 'int LLVMFuzzerTestOneInput(const char *p, long n);' \
	    'int LLVMFuzzerTestOneInput(const char *p, long n)' \
	    '{ (void)p; (void)n; return 0; }' | $(FUZZ_CC) -x c \
	    -fsanitize=fuzzer,address,undefined -o /dev/null - 2>/dev/null; \
	    then echo "fuzz: $(FUZZ_CC) cannot build with -fsanitize=fuzzer;" \
	    "on Debian install clang and libclang-rt-14-dev"; exit 1; fi

# The summary: executions per target come from libFuzzer's final stats.
fuzz: $(FUZZ_TARGETS:%=fuzz-run-%)
	@fail=0; printf '\n%-20s %12s %10s %8s  %s\n' target executions \
	    exec/s corpus result; \
	for t in $(FUZZ_TARGETS); do \
	    log=$(FUZZ_BUILD)/$$t.log; \
	    st=$$(cat $(FUZZ_BUILD)/$$t.status 2>/dev/null || echo 1); \
	    execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $$log | \
	        tail -n 1); \
	    if [ -z "$$execs" ]; then execs=$$(sed -n \
	        's/^#\([0-9][0-9]*\).*/\1/p' $$log | tail -n 1); fi; \
	    rate=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $$log | \
	        tail -n 1); \
	    corp=$$(ls $(FUZZ_BUILD)/corpus/$$t | wc -l); \
	    if [ "$$st" = 0 ]; then res=ok; else res="FOUND (exit $$st)"; \
	        fail=1; fi; \
	    printf '%-20s %12s %10s %8s  %s\n' $$t "$${execs:-?}" \
	        "$${rate:-?}" "$$corp" "$$res"; \
	done; \
	for t in $(FUZZ_TARGETS); do \
	    st=$$(cat $(FUZZ_BUILD)/$$t.status 2>/dev/null || echo 1); \
	    [ "$$st" = 0 ] && continue; \
	    echo; echo "== $$t: $(FUZZ_BUILD)/$$t.log"; \
	    grep -E '^fuzz: invariant|^==[0-9]+==ERROR|^SUMMARY|runtime error|Test unit written|artifact_prefix' \
	        $(FUZZ_BUILD)/$$t.log | head -n 20; \
	done; exit $$fail

fuzz-clean:
	rm -rf $(FUZZ_BUILD) $(BUILD)/fuzz $(BUILD)/$(FUZZ_DIR)

-include $(wildcard $(BUILD)/$(FUZZ_DIR)/*.d $(FUZZ_BUILD)/*/*.d \
    $(FUZZ_BUILD)/*/*/*.d)
