# `make demo` and `make test` work on a fresh machine: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-min lint bench gpu-check clean

$(BIN)/ecg-edge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[train,dev]"
	touch $@

# Real recordings beside the checkout, when present: the labelled folders the default model was trained
# on (its test part scores it and the transfer model, its validation and test parts gate the export);
# else ../shared/data/wfdb, to validate the export and infer on.
LABELLED := $(wildcard ../shared/data/real ../shared/data/ptbxl ../shared/data/cinc-more)
RECORDS := $(or $(LABELLED),$(wildcard ../shared/data/wfdb))

demo: $(BIN)/ecg-edge
	$(BIN)/ecg-edge demo $(addprefix --records ,$(RECORDS))

# Test files spread over up to 4 processes (pytest-xdist): 8.6 min instead of 11.5 on 2 cores, measured.
test: $(BIN)/ecg-edge
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile

# The runtime alone (no TensorFlow) at its declared minimum versions: keeps pyproject's bounds honest.
test-min:
	$(PYTHON) -m venv --clear .venv-min  # fresh: a kept venv hid pandas 3 from this check once
	.venv-min/bin/python -m pip install -q -r .ci/min-runtime.txt
	.venv-min/bin/python -m pip install -q --no-deps -e .
	.venv-min/bin/python -m pytest -q -p no:cacheprovider tests/test_preprocess.py tests/test_readers.py tests/test_formats.py \
		tests/test_infer.py tests/test_cli.py tests/test_metrics.py tests/test_quality.py tests/test_report.py

lint: $(BIN)/ecg-edge
	$(BIN)/ruff check .
	$(BIN)/mypy ecg_edge export training cli

bench: $(BIN)/ecg-edge
	$(BIN)/python benchmarks/run_matrix.py

# On a machine with an NVIDIA GPU, with what it has (installs nothing): doctor, pytest -m gpu, the GPU
# bench matrix -> benchmarks/results/ (and OUT=DIR). MODEL=EXPORT_DIR where TensorFlow is absent.
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py $(if $(MODEL),--model $(MODEL)) $(if $(OUT),--out $(OUT))

clean:
	rm -rf $(VENV) .venv-min build *.egg-info .pytest_cache .mypy_cache .ruff_cache
