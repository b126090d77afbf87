"""The model a run trains: tokenizer, base weights (or a new Llama-layout model), NF4 for QLoRA, LoRA adapters.

Nothing here knows about processes or the loop's state: the trainer calls these in its setup.
"""

from __future__ import annotations

from typing import Any

from internlocal.errors import TrainingError
from internlocal.i18n import _
from internlocal.train.recipe import Architecture, Recipe


def device_and_precision(recipe: Recipe, local_rank: int):
    """(device, precision name, torch dtype) for this process: its GPU for a GPU recipe (refused when none is
    visible), the CPU otherwise; ``auto`` precision is bf16 where the GPU supports it, fp16 on older GPUs,
    fp32 on the CPU."""
    import torch

    if recipe.on_gpu and not torch.cuda.is_available():
        raise TrainingError(
            _(
                "This recipe is for hardware: {hardware}, but no CUDA GPU is visible; use a cpu recipe or hardware=cpu."
            ).format(hardware=recipe.hardware)
        )
    device = torch.device(f"cuda:{local_rank}" if recipe.on_gpu else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    precision = recipe.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "fp32"
    return device, precision, {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_tokenizer(path: str, trust_remote_code: bool):
    """The model folder's tokenizer, or None for a folder without tokenizer files (only pre-tokenized data
    can be used then); remote code the recipe does not trust is a ``UserError``."""
    from internlocal.data.tokenizer import hf_tokenizer

    try:
        return hf_tokenizer(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None


def scratch_model(architecture: Architecture, seed: int, tokenizer, dtype, attention: str):
    """A new model of the recipe's architecture (Llama layout) with the tokenizer's vocabulary, seeded."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if tokenizer is None:
        raise TrainingError(
            _("A from-scratch model takes its vocabulary from a tokenizer, and the recipe's model has none.")
        )
    a = architecture
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads or a.heads,
        intermediate_size=a.intermediate,
        max_position_embeddings=a.max_positions,
        rope_theta=a.rope_theta,
        tie_word_embeddings=a.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)


def load_model(recipe: Recipe, path: str, tokenizer, *, load_dtype, compute_dtype, device, attention: str):
    """(model, whether it took ``attention``): the recipe's base from ``path`` (NF4 with double quantization for
    QLoRA), or a new model for ``init: scratch``. Remote-code models take no attention backend and load with
    their own."""
    import torch
    from transformers import AutoModelForCausalLM

    if recipe.init == "scratch":
        assert recipe.architecture is not None  # the recipe's validator requires it
        return scratch_model(recipe.architecture, recipe.seed, tokenizer, load_dtype, attention), True
    kwargs: dict[str, Any] = {"trust_remote_code": recipe.trust_remote_code}
    if recipe.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32 if compute_dtype == torch.float16 else compute_dtype,
        )
        kwargs["device_map"] = {"": device.index if device.type == "cuda" else "cpu"}
    try:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=load_dtype, attn_implementation=attention, **kwargs
        ), True
    except (ValueError, ImportError):  # "does not support an attention implementation": the model's code decides
        return AutoModelForCausalLM.from_pretrained(path, dtype=load_dtype, **kwargs), False


def prepare_for_training(model, recipe: Recipe, device):
    """On the device, gradient checkpointing as the recipe says, LoRA adapters for LoRA/QLoRA, in train mode."""
    if recipe.method == "qlora":
        import bitsandbytes as bnb

        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                # bitsandbytes repacks NF4 weights for fast CPU inference on the first no-grad forward
                # (an evaluation); the repacked path has no backward, so gradients after it would be
                # wrong. Training keeps the trainable layout throughout.
                module.support_avx512bf16_for_cpu = False
    else:  # QLoRA's weights were placed by device_map while loading
        model.to(device)
    if recipe.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if recipe.method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        lora = recipe.lora
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.targets,
                task_type="CAUSAL_LM",
            ),
        )
    model.train()
    return model


def greedy_answer(model, tokenizer, prompt: str, device, pad_id: int, chat: bool, max_new_tokens: int = 48) -> str:
    """The model's greedy answer to ``prompt`` (through the chat template when ``chat`` and there is one): the
    sample answers an evaluation shows beside the validation loss."""
    import torch

    if chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    ids = ids.to(device)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
