# `make run` and `make test` are the whole set-up: the first call creates .venv and installs
# everything through packaging/install.sh (the same script the container images and the install test
# run); later calls reinstall only when pyproject.toml (or this file) changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is installed first and pinned, so that nothing later pulls a multi-GB CUDA build.
# On this project's machines `torch==2.13.0` resolves to the CPU build on local disk; elsewhere set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu (or a CUDA index) to choose the build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# llama-cpp-python compiles from source (about 5 minutes on 2 cores, cached by pip afterwards) unless
# LLAMA_WHEEL_INDEX names an index of prebuilt wheels (README: "Installing"). GGML_NATIVE=OFF with an
# AVX2 baseline: a native build faults (ldtilecfg) on CPUs that report AMX inside VMs that do not enable
# AMX state. For NVIDIA: make install LLAMA_CMAKE_ARGS="-DGGML_CUDA=on" (pip cache remove llama_cpp_python first).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_WHEEL_INDEX ?=

.PHONY: run test test-fast test-long test-fuzz test-install test-snapshots-update lint i18n i18n-library install dist bench clean

run: $(STAMP)
	$(VENV)/bin/internlocal

# the whole suite; GPU-only tests are selected with `pytest -m gpu` on a machine that has one
test: $(STAMP)
	$(PY) -m pytest -q --durations=15 -m "not gpu and not install and not long and not chaos and not distributed"

# past `make test`'s budget: the forgetting experiment (two whole finetunes compared), the chaos harness killing
# every job kind at several points, training's kill -9 and lost-rank tests (docs/reliability.md), and training
# over several gloo processes (DDP, FSDP: the multi-GPU code paths, a process per rank)
test-long: $(STAMP)
	$(PY) -m pytest -q -s --durations=5 -m "long or chaos or distributed"

# the fuzzing properties of `make test` with many more examples each (hypothesis profile "fuzz", tests/conftest.py)
test-fuzz: $(STAMP)
	INTERNLOCAL_FUZZ_PROFILE=fuzz $(PY) -m pytest -q --durations=5 -m fuzz

# installs of the built wheel into fresh environments (install.sh, uv tool), outside the repository
test-install: $(STAMP)
	$(PY) -m pytest -q --durations=5 -m install

# the inner loop: everything but the tests marked slow (whole finetunes, pretraining runs, agreement runs)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not gpu and not install and not long and not chaos and not distributed"

# after a deliberate layout change: rewrite the SVG snapshots of every screen (tests/__snapshots__), then look at
# `git diff --stat` and the images before committing them; `make test` fails on any snapshot not updated this way
test-snapshots-update: $(STAMP)
	$(PY) -m pytest -q tests/test_tui_layouts.py -k snapshot --snapshot-update

# format, lint rules, types, and the layer contract (DESIGN.md: arrows point down)
lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) tools/check_i18n.py

# translations (docs/architecture.md, "Languages"): extract every _()/N_() string, merge them into each language's
# catalog (internlocal/locale/<lang>/LC_MESSAGES/internlocal.po: translate the new empty entries there), compile
# the .mo files the app reads; tests/test_i18n.py fails while an entry is untranslated or a .mo is stale
I18N_POT := $(VENV)/internlocal.pot
i18n: $(STAMP)
	$(VENV)/bin/pybabel -q extract -F babel.cfg -k Np_:1,2 --no-location --sort-output --omit-header -o $(I18N_POT) .
	$(VENV)/bin/pybabel -q update -i $(I18N_POT) -d internlocal/locale -D internlocal --no-fuzzy-matching --ignore-obsolete
	$(VENV)/bin/pybabel compile -d internlocal/locale -D internlocal --statistics

# after upgrading click or typer: the sentences they translate through gettext (internlocal/cli/library_strings.py)
i18n-library: $(STAMP)
	$(PY) tools/i18n_library_strings.py

install: $(STAMP)

$(STAMP): pyproject.toml Makefile packaging/install.sh packaging/constraints.txt packaging/system-packages.sh
	@packaging/system-packages.sh
	@PYTHON="$(PYTHON)" TORCH_SPEC="$(TORCH_SPEC)" TORCH_INDEX="$(TORCH_INDEX)" \
		LLAMA_CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" LLAMA_WHEEL_INDEX="$(LLAMA_WHEEL_INDEX)" \
		packaging/install.sh $(VENV) -e ".[dev]"
	@touch $(STAMP)

# sdist and wheel in dist/, the wheel checked (check-wheel-contents): what `uv tool install`, pipx and the
# container images install
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist .
	$(VENV)/bin/check-wheel-contents dist/*.whl

bench: $(STAMP)
	$(PY) benchmarks/chat_decode.py
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/download.py
	$(PY) benchmarks/serve_load.py
	$(PY) benchmarks/eval.py
	$(PY) benchmarks/finetune.py
	$(PY) benchmarks/pretrain.py
	$(PY) benchmarks/kb.py
	$(PY) benchmarks/embedder.py

clean:
	rm -rf $(VENV) build dist *.egg-info
