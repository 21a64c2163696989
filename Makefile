# kind-bench: `make repro` runs the default benchmark through DVC; `make test` runs the test suite.
# Both create .venv (python3 -m venv) and install the project into it on first use.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test lint perf budget gpu-check readme clean

$(STAMP): pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# --no-compile: pip would byte-compile every installed module (torch's CUDA build is ~5.5 GB; 90 s -> 46 s
	# here); Python compiles the modules a run imports on first use instead
	$(BIN)/pip install --quiet --no-compile -e ".[dev]"
	touch $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check kind_bench baselines tests examples

perf: $(STAMP)
	$(BIN)/python -m kind_bench.perf

clean:
	rm -rf $(VENV) artifacts .dvc/cache .dvc/tmp

budget: $(STAMP)
	$(BIN)/python -m kind_bench.budget

gpu-check: $(STAMP)
	$(BIN)/python -m kind_bench.gpu_check

readme: $(STAMP)
	$(BIN)/python -m kind_bench.readme
