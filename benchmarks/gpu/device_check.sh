#!/bin/sh
# One GPU window, prepared to fit it (about 8 minutes on an H200): pretraining MFU (InternLM2-1.8B shape,
# ours vs HF Trainer), then the 7B QLoRA check (run_qlora.sh's pair) at 2048 and, time left, 4096.
# Each result is one JSON line in $OUT/results.jsonl; the logs go to $OUT/log.txt. Carry .gpu-wheels/
# (see run_qlora.sh's header for the pip download line; psutil too).
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
step() {  # step LIMIT_S COMMAND...: run with a limit, keep JSON lines, log the rest
  limit=$1; shift
  echo "== $(elapsed)s: $*" >> "$OUT/log.txt"
  timeout "$limit" "$@" > "$OUT/step.out" 2>> "$OUT/log.txt"
  echo "   exit $? at $(elapsed)s" >> "$OUT/log.txt"
  grep '^{"' "$OUT/step.out" >> "$OUT/results.jsonl"
  grep -v '^{"' "$OUT/step.out" | tail -40 >> "$OUT/log.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python -m pip install --quiet --no-deps --no-index .gpu-wheels/*.whl >> "$OUT/log.txt" 2>&1; which python >> "$OUT/log.txt"
python -c "import torch, transformers, peft, bitsandbytes; print(torch.__version__, torch.version.cuda, transformers.__version__, peft.__version__, bitsandbytes.__version__)" >> "$OUT/gpu.txt" 2>&1
step 150 python benchmarks/gpu/pretrain_mfu.py internlm2-1_8b 2048 4 10
rm -rf /tmp/rand-pretrain-*
for seq in 2048 4096; do
  if [ "$seq" = 4096 ] && [ "$(elapsed)" -gt 330 ]; then echo "skip 4096: $(elapsed)s used" >> "$OUT/log.txt"; break; fi
  step 200 python benchmarks/gpu/qlora_baseline.py internlm2_5-7b $seq 4
  step 200 python benchmarks/gpu/qlora_ours.py internlm2_5-7b $seq 4
done
cat "$OUT/results.jsonl"
echo "total $(elapsed)s"
