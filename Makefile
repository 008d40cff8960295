# Two commands for a fresh machine (see README):
#   make run    set everything up, then run the main job
#   make test   set everything up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tfdeblur-deps
EDITABLE := $(VENV)/.tfdeblur-editable

.PHONY: setup build run test test-fast bench lint cuda-standalone clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
# tf2onnx and onnxruntime are the optional [onnx] extra, installed here for its tests.
	$(BIN)/pip install --quiet "tensorflow==2.21.*" "keras>=3.10" numpy opencv-python-headless "tensorflow-serving-api==2.21.*" ai-edge-litert pytest hypothesis "ruff==0.17.5" tf2onnx onnxruntime jax
	touch $(STAMP)

# Editable install, once (again when the packaging files change); it compiles
# custom_ops/ into tfdeblur/ops/ against the installed TF.
$(EDITABLE): pyproject.toml setup.py $(STAMP)
	$(BIN)/pip install --quiet --no-build-isolation --no-deps -e .
	touch $(EDITABLE)

# custom_ops/build.py compiles only when the sources, the TensorFlow version or the
# CUDA choice changed since the library was built (a check that takes a moment), so
# `make test` after `make run` rebuilds nothing. The CUDA kernels are built when a
# GPU is present, or with TFDEBLUR_CUDA=1 (CI); TFDEBLUR_CUDA=0 never.
setup: $(EDITABLE)
	$(BIN)/python custom_ops/build.py

# Recompile the op library after editing custom_ops/ (TFDEBLUR_CUDA=auto|0|1);
# `$(BIN)/python custom_ops/build.py --force` rebuilds an unchanged one.
build: $(STAMP)
	$(BIN)/python custom_ops/build.py

# Main job: report the installation, then deblur the bundled real blurry photo
# with the best bundled model (demo_output/deblurred.png, side_by_side.png).
# Without a bundled model `tfdeblur demo` fails saying so; it never pretends.
run: setup
	$(BIN)/tfdeblur info
	$(BIN)/tfdeblur demo

test: setup
	$(BIN)/python -m pytest -q tests

# The quick loop: every test not marked slow (tests/slow_tests.txt, measured).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: setup
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .

# TF-free CUDA test library for checks on a GPU host (CuPy / PyTorch).
cuda-standalone:
	$(PYTHON) custom_ops/build.py --standalone-cuda build/cuda_standalone

clean:
	rm -rf build *.egg-info tfdeblur/ops/_tfdeblur_ops*.so tfdeblur/ops/_build_info.json \
		tfdeblur/ops/.build_fingerprint.json $(EDITABLE)
