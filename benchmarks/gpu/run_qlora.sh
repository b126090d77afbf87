#!/bin/sh
# The issue-5 GPU check, baseline then ours on the same card in one run (under 8 minutes on an H200):
# QLoRA of a random model of InternLM2.5-7B's shape, seq 2048 then 4096, batch 1, r=16 all-linear.
# The GPU machine has torch/transformers/peft but no bitsandbytes, and the loop reads its config with
# pydantic and PyYAML: carry their cp312 wheels in .gpu-wheels/ (about 45 MB, bitsandbytes most of it):
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux_2_24_x86_64 \
#       bitsandbytes==0.50.2 pydantic pydantic-core annotated-types typing-inspection pyyaml -d .gpu-wheels
# `tests/test_train.py` runs the same scripts at the tiny shape on the CPU, so a GPU window finds no bug of theirs.
set -e
pip install --quiet --no-index --find-links .gpu-wheels bitsandbytes pydantic pyyaml
for seq in 2048 4096; do
  python benchmarks/gpu/qlora_baseline.py internlm2_5-7b $seq 4
  python benchmarks/gpu/qlora_ours.py internlm2_5-7b $seq 4
done
