# Quick start: `make demo` (the main job on embedded defaults) and `make test`.
# Both create .venv when missing and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRACES ?= ../shared/traces/alibaba_gpu_v2023

# Python writes the bytecode of what it imports, once, for every later process to read. Some
# environments set PYTHONDONTWRITEBYTECODE=1 (this one's image does), and then every process
# compiles every module it imports from source again: `import ray, pandas, sklearn, scipy, numba`
# took 12.6 s there against 4.2 s once written, and the suite starts hundreds of Python
# processes (CLI runs, Ray workers and agents). Nothing here is run from a read-only tree.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo demo-stop test test-all test-router bench reproduce docs clean install system-deps

# --no-compile: pip byte-compiles every file it installs (Ray, torch, MLflow ...: 8.7 min of a clean
# install here, against 35 s without); Python compiles what is imported, once, on first use
# (PYTHONDONTWRITEBYTECODE is unexported above, so that it can).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile --upgrade pip
	# torch first and pinned: the local CPU wheel, not the CUDA build from the registry
	$(BIN)/python -m pip install -q --no-compile torch==2.13.0
	$(BIN)/python -m pip install -q --no-compile -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The whole system on this machine (orchestrator/demo.py): Ray cluster, learned policies,
# Serve router, a workload through the router by `ray job submit`, the simulator comparison
# (and the FGD packing replay when the Alibaba trace is there), the Streamlit view.
# Knobs (DEMO_DURATION, DEMO_*_PORT, DEMO_OUT ...) are in the script's docstring.
demo: $(STAMP)
	$(BIN)/python -m orchestrator.demo

# Stops exactly what `make demo` started (recorded in $DEMO_OUT/demo.json, default results/demo).
demo-stop:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m orchestrator.demo stop; else echo "no $(VENV): nothing to stop"; fi

# Debian's Chromium, Prometheus, PostgreSQL and nginx, which tests drive for real: installed when
# root (apt-get), else one line says how and the target stops (SKIP_SYSTEM_DEPS=1: skip their tests).
system-deps:
	@bash .ci/system-deps

# The suite CI runs: everything but the slow full-trace reproduction. Two workers: one runs every
# test that starts an emulated Ray cluster, one after another (tests/conftest.py groups them), while
# the other runs the rest (so does `test-all`).
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadgroup --durations=30

# The Serve router's live tests (real cluster, real HTTP, Prometheus, kills).
test-router: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -m router_live

test-all: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The full published experiment: 6 policies x 10 seeds on the Alibaba trace (minutes).
REPRODUCE := $(BIN)/orchestrator simulate --mode packing --trace $(TRACES)/openb_pod_list_default.csv \
	--policies random,dot-product,gpu-clustering,gpu-packing,best-fit,fgd --seeds 42-51 --jobs 2 \
	--out results/packing
reproduce: $(STAMP)
	$(REPRODUCE)

# The pages of docs/ that one machine writes in minutes, each dated and naming its command.
# docs/sim_vs_real.md and docs/evaluation.md say the commands that write them (a Ray cluster, trained models).
docs: $(STAMP)
	$(BIN)/python -m benchmarks --markdown docs/performance.md copy env online packing rf summary
	$(REPRODUCE) --markdown docs/fgd_reproduction.md

clean:
	rm -rf results .pytest_cache
