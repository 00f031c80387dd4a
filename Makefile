# personalive developer targets. `make install` builds .venv; every other target uses it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch for this machine: where no NVIDIA driver is visible, the CPU build torch==2.13.0 (on the project's
# CPU machines pip takes it from local disk: no multi-GB CUDA download); elsewhere the default (CUDA) build.
# Other machines: `make install TORCH_SPEC=torch==X TORCH_INDEX="--index-url <a CPU or CUDA wheel index>"`.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
ifeq ($(HAS_GPU),1)
TORCH_SPEC ?= torch>=2.4
else
TORCH_SPEC ?= torch==2.13.0
endif
TORCH_INDEX ?=
EXTRAS ?= dev

.PHONY: install test test-faces lint format demo bench clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/personalive --version

test:
	$(BIN)/python -m pytest -q

# the face finder's extra pins numpy<2 / protobuf<5 (mediapipe 0.10.21): its tests run in an environment of
# their own so that the main one keeps current numpy/onnx (README: "Why this face finder")
test-faces:
	$(MAKE) install VENV=.venv-faces EXTRAS=dev,faces
	.venv-faces/bin/python -m pytest -q -m faces tests

lint:
	$(BIN)/ruff format --check personalive tests
	$(BIN)/ruff check personalive tests

format:
	$(BIN)/ruff format personalive tests
	$(BIN)/ruff check --fix personalive tests

demo:
	bash examples/demo.sh

bench:
	$(BIN)/personalive bench $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache outputs .cache/demo-weights .venv-faces
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
