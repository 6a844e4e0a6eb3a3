# Quick start: `make demo` (the main job on embedded defaults) and `make test`.
# Both create .venv when missing and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRACES ?= ../shared/traces/alibaba_gpu_v2023
OUT ?= results/demo

.PHONY: demo test test-all test-router bench reproduce clean install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: the local CPU wheel, not the CUDA build from the registry
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/orchestrator simulate --cluster configs/cluster/local.yaml \
		--workload configs/workloads/high_load.yaml \
		--policies random,round-robin,least-loaded,cheapest-feasible,fastest-feasible,best-fit,dot-product,gpu-packing,gpu-clustering,fgd,oracle \
		--seed 7 --out $(OUT)/online
	@if [ -f $(TRACES)/openb_pod_list_default.csv ]; then \
		$(BIN)/orchestrator simulate --mode packing --trace $(TRACES)/openb_pod_list_default.csv \
			--policies random,dot-product,gpu-clustering,gpu-packing,best-fit,fgd --seeds 42-44 --jobs 2 \
			--out $(OUT)/packing; \
	else echo "(trace not found at $(TRACES): skipping the FGD packing replay)"; fi

# The suite CI runs: everything but the slow full-trace reproduction.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not router_live"

# The Serve router's live tests (real cluster, real HTTP, Prometheus, kills).
test-router: $(STAMP)
	$(BIN)/python -m pytest -q -m router_live

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The full published experiment: 6 policies x 10 seeds on the Alibaba trace.
reproduce: $(STAMP)
	$(BIN)/orchestrator simulate --mode packing --trace $(TRACES)/openb_pod_list_default.csv \
		--policies random,dot-product,gpu-clustering,gpu-packing,best-fit,fgd --seeds 42-51 --jobs 2 \
		--out results/packing

clean:
	rm -rf results .pytest_cache
