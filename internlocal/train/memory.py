"""Peak memory of a training run, estimated before anything loads, with a breakdown.

Parts: weights (by quantization: NF4 with double quantization for QLoRA's linear layers,
embeddings and norms in the compute dtype), LoRA parameters, gradients, optimizer states,
activations (with or without gradient checkpointing; on the CPU a fitted attention term),
logits (our loop computes them only for trained tokens, in chunks) and the
runtime (Python + torch + libraries on the CPU, the allocator's slack on a GPU).
The run records the measured peak next to the estimate, so the model can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

GIB = 2**30
CPU_RUNTIME = int(0.45 * GIB)  # torch + transformers + peft + bitsandbytes imported, tokenizer, data (measured)
LOGIT_CHUNK = 1024  # tokens per chunk in the loop's loss (see loss.py)
_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Shape(BaseModel):
    """A model's dimensions, from its config, its GGUF header, or a recipe's ``shape:`` (a pydantic model so that a
    recipe saved with ``exclude_unset`` keeps only the dimensions it gave)."""

    model_config = ConfigDict(extra="forbid")

    parameters: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool = False

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def linear_parameters(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_dims().values())

    @property
    def embedding_parameters(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> Shape:
        text = config.get("text_config") or config
        hidden = text["hidden_size"]
        heads = text["num_attention_heads"]
        shape = cls(
            parameters=0,
            hidden=hidden,
            layers=text["num_hidden_layers"],
            intermediate=text.get("intermediate_size") or 4 * hidden,
            heads=heads,
            kv_heads=text.get("num_key_value_heads") or heads,
            vocab=text["vocab_size"],
            tied_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        )
        shape.parameters = shape.linear_parameters + shape.embedding_parameters + shape.layers * 2 * hidden
        return shape

    @classmethod
    def from_gguf(cls, metadata: dict[str, Any], parameters: int | None = None) -> Shape:
        arch = metadata.get("general.architecture", "llama")

        def get(key: str, default=None):
            return metadata.get(f"{arch}.{key}", default)

        hidden = get("embedding_length")
        heads = get("attention.head_count")
        vocab = get("vocab_size") or metadata.get("tokenizer.ggml.vocab_size") or 32000
        shape = cls(
            parameters=0,
            hidden=hidden,
            layers=get("block_count"),
            intermediate=get("feed_forward_length"),
            heads=heads,
            kv_heads=get("attention.head_count_kv") or heads,
            vocab=vocab,
        )
        untied = shape.linear_parameters + shape.embedding_parameters + shape.layers * 2 * hidden
        shape.tied_embeddings = bool(
            parameters and abs(parameters - (untied - vocab * hidden)) < abs(parameters - untied)
        )
        shape.parameters = parameters or untied
        return shape


@dataclass
class Estimate:
    parts: dict[str, int] = field(default_factory=dict)
    device: str = "cpu"
    trainable_parameters: int = 0

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "total_bytes": self.total,
            "trainable_parameters": self.trainable_parameters,
            "parts": dict(self.parts),
        }

    def table(self) -> str:
        rows = [f"  {name:<22} {value / GIB:8.2f} GiB" for name, value in self.parts.items()]
        return "\n".join([*rows, f"  {'total':<22} {self.total / GIB:8.2f} GiB"])


def lora_parameters(shape: Shape, r: int, targets: str | list[str]) -> int:
    names = _LINEARS if targets == "all-linear" else [t for t in (targets if isinstance(targets, list) else [targets])]
    dims = shape.linear_dims()
    return shape.layers * sum(r * (dims[n][0] + dims[n][1]) for n in names if n in dims)


def fp32_master_weights(method: str, precision: str, on_gpu: bool) -> bool:
    """Whether training keeps fp32 weights and computes under autocast: fp16 always (its gradients need a
    scaler and fp32 weights), and bf16 when every weight is updated (full finetuning, pretraining) — a bf16
    weight cannot take an update smaller than 1/256 of itself, which at lr 1e-5 is most of them. The loop
    and the memory estimate both ask this."""
    if not on_gpu:
        return False
    return precision == "fp16" or (precision in ("bf16", "auto") and method in ("full", "pretrain"))


def estimate(
    shape: Shape,
    *,
    method: str,
    seq_len: int,
    micro_batch: int,
    gradient_checkpointing: bool,
    optimizer: str = "adamw",
    dtype_bytes: int = 4,
    lora_r: int = 16,
    lora_targets: str | list[str] = "all-linear",
    device: str = "cpu",
    chunked_logits: bool = True,
    trained_fraction: float = 1.0,
    activation_bytes: int | None = None,
    shards: int = 1,
) -> Estimate:
    """Peak bytes of one training step, by part. ``dtype_bytes``: of the weights (4 for fp32, 2 for bf16/fp16);
    ``activation_bytes``: of what the forward pass keeps (default: as the weights; 2 under autocast);
    ``shards``: processes that FSDP splits weights, gradients and optimizer states over."""
    est = Estimate(device=device)
    other = shape.parameters - shape.linear_parameters - shape.embedding_parameters
    if method == "qlora":
        linear = shape.linear_parameters
        # NF4: 4 bits per weight; double-quantized absmax: 8 bits per 64 weights (+ fp32 per 256 blocks)
        est.parts["weights (NF4)"] = int(linear * 0.5 + linear / 64 + linear / 64 / 256 * 4)
        est.parts["embeddings, norms"] = (shape.embedding_parameters + other) * dtype_bytes
    else:
        est.parts["weights"] = shape.parameters * dtype_bytes
    if method in ("lora", "qlora"):
        trainable = lora_parameters(shape, lora_r, lora_targets)
        est.parts["LoRA parameters"] = trainable * 4  # peft keeps adapters in fp32
        grad_bytes, state_bytes = 4, 4
    else:
        trainable = shape.parameters
        grad_bytes, state_bytes = dtype_bytes, dtype_bytes
    est.trainable_parameters = trainable
    est.parts["gradients"] = trainable * grad_bytes
    est.parts["optimizer states"] = trainable * (2 if optimizer != "adamw" else 2 * state_bytes)
    tokens = seq_len * micro_batch
    act_bytes = activation_bytes or dtype_bytes
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_dim
    # tensors one decoder layer keeps for the backward pass, per token: norms (with their fp32 internals),
    # q/k/v before and after rotary, the MLP's gate, up, activation and product: 16h + 4kv + 4i values
    per_token_layer = (16 * h + 4 * kv + 4 * i) * act_bytes
    if method in ("lora", "qlora"):
        per_token_layer += 7 * lora_r * act_bytes
    if gradient_checkpointing:
        est.parts["activations"] = tokens * (shape.layers * h * act_bytes + per_token_layer)
    else:
        est.parts["activations"] = tokens * shape.layers * per_token_layer
    if device == "cpu":
        # measured, not derived: on the CPU a training step also holds row-length² values per head and layer
        # (attention and its backward): about 2.2 of them with LoRA/full weights (fitted on LoRA runs with 384- and
        # 512-token rows, within 2%), 4.6 with QLoRA, whose NF4 matmuls hold more per row (SmolLM2, 256/512 rows)
        layers_kept = 1 if gradient_checkpointing else shape.layers
        per_value = 4.6 if method == "qlora" else 2.2
        est.parts["attention"] = int(
            per_value * layers_kept * micro_batch * shape.heads * seq_len * seq_len * act_bytes
        )
    trained = max(1, int(tokens * trained_fraction))
    scored = min(LOGIT_CHUNK, trained) if chunked_logits else tokens
    est.parts["logits"] = scored * shape.vocab * 4 * 3  # fp32 logits, log-softmax and their gradient
    for part in ("weights", "gradients", "optimizer states"):
        if shards > 1 and part in est.parts:
            est.parts[part] //= shards
    if device == "cpu":
        est.parts["runtime"] = CPU_RUNTIME
        # loading goes through the full-precision weights; freed, their pages mostly stay with the process
        full_precision = shape.parameters * dtype_bytes
        est.parts["loading leftovers"] = int(full_precision * (0.5 if method == "qlora" else 0.1))
    else:
        est.parts["runtime"] = int(0.06 * sum(est.parts.values()))  # the CUDA caching allocator's slack
    return est
