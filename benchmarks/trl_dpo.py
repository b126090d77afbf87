"""TRL's DPOTrainer on a file of preference pairs: the baseline internlocal's DPO is checked and timed against.

    python benchmarks/trl_dpo.py MODEL_DIR PAIRS.jsonl OUT.json [--method full|lora] [--steps 3] [--batch 8]
        [--lr 5e-6] [--beta 0.1] [--max-length 128] [--threads 2] [--precompute] [--no-gradient-checkpointing]

PAIRS.jsonl holds internlocal's normalized pairs ({"messages": prompt turns, "chosen", "rejected"}); they
are given to TRL in its conversational layout, so its chat template rendering is the model's own, as ours
is. Padded batches (TRL's padding-free mode needs FlashAttention), a constant learning rate without
warm-up, AdamW, gradient clipping at 1.0, fp32 on the CPU. OUT.json: the loss of each step, trained
(non-padding) tokens per second and the peak RSS of this process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("pairs")
    parser.add_argument("out")
    parser.add_argument("--method", default="full", choices=("full", "lora"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precompute", action="store_true", help="reference log-probabilities computed once")
    parser.add_argument(
        "--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True, help="TRL's default: on"
    )
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in Path(args.pairs).read_text(encoding="utf-8").splitlines() if line.strip()]
    data = Dataset.from_list(
        [
            {
                "prompt": row["messages"],
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}],
            }
            for row in rows
        ]
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    peft_config = None
    if args.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    config = DPOConfig(
        output_dir=str(Path(args.out).with_suffix(".trainer")),
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=args.beta,
        max_length=args.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=42,
        dataloader_num_workers=0,
        precompute_ref_log_probs=args.precompute,
        gradient_checkpointing=args.gradient_checkpointing,
        disable_tqdm=True,
    )
    step_times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            step_times.append(time.perf_counter() - self.started)

    setup_started = time.perf_counter()
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[Clock()],
    )
    setup_seconds = time.perf_counter() - setup_started  # tokenizing, and the reference pass with --precompute
    # the tokens a pair puts through the model: its two sequences as truncated, padding excluded (what ours counts)
    tokens_per_pair = [
        min(len(ex["prompt_ids"]) + len(ex["chosen_ids"]), args.max_length)
        + min(len(ex["prompt_ids"]) + len(ex["rejected_ids"]), args.max_length)
        for ex in trainer.train_dataset
    ]
    started = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    # the pairs the steps read, at the dataset's mean tokens per pair
    steps_tokens = sum(tokens_per_pair) / len(tokens_per_pair) * min(args.batch, len(rows)) * args.steps
    result = {
        "losses": losses,
        "seconds": round(elapsed, 2),
        "setup_seconds": round(setup_seconds, 2),
        "step_seconds": [round(s, 3) for s in step_times],
        "tokens_per_pair": tokens_per_pair,
        "tokens": round(steps_tokens),
        "tokens_per_s": round(steps_tokens / sum(step_times), 1) if step_times else None,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "columns": list(trainer.train_dataset.column_names),
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "tokens_per_pair"}))


if __name__ == "__main__":
    sys.exit(main())
