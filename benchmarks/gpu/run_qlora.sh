#!/bin/sh
# The issue-5 GPU check, baseline then ours on the same card in one run (under 2 minutes on an H200,
# most of it making and saving the random model): QLoRA of a random model of InternLM2.5-7B's shape,
# seq 2048 then 4096, batch 1, r=16 all-linear. device_check.sh runs it after the pretraining check.
# The GPU machine has torch/transformers/peft but no bitsandbytes, and the loop needs pydantic, PyYAML
# and psutil: carry their cp312 wheels in .gpu-wheels/ (about 45 MB, bitsandbytes most of it), made with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_24_x86_64 \
#       --platform manylinux_2_17_x86_64 bitsandbytes==0.50.2 pydantic==2.14.4 pydantic-core==2.50.5 \
#       annotated-types typing-inspection pyyaml psutil -d .gpu-wheels
# (pydantic-core pinned to what that pydantic requires; installed with --no-deps, as the machine has no index)
# `tests/test_train.py` runs the same scripts at the tiny shape on the CPU, so a GPU window finds no bug of theirs.
set -e
python -m pip install --quiet --no-deps --no-index .gpu-wheels/*.whl
for seq in 2048 4096; do
  python benchmarks/gpu/qlora_baseline.py internlm2_5-7b $seq 4
  python benchmarks/gpu/qlora_ours.py internlm2_5-7b $seq 4
done
