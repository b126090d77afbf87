"""What the loop measures besides the loss: model FLOPs per trained token and the GPUs' peaks (for the TFLOPs
and MFU it reports), and the process's peak memory."""

from __future__ import annotations


def flops_per_token(config, seq_len: int, parameters: int) -> float:
    """Model FLOPs of one trained token: 6 per non-embedding weight plus attention's 12·layers·hidden·seq_len
    (the PaLM paper's MFU accounting; activation recomputation is not counted)."""
    layers = getattr(config, "num_hidden_layers", 0) or 0
    hidden = getattr(config, "hidden_size", 0) or 0
    vocab = getattr(config, "vocab_size", 0) or 0
    return 6.0 * max(0, parameters - vocab * hidden) + 12.0 * layers * hidden * seq_len


# dense bf16/fp16 tensor-core peaks (FLOP/s) of common GPUs, for MFU; unknown devices report none
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "H800": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "RTX 4090": 165e12,
    "A10": 125e12,
    "V100": 125e12,
    "T4": 65e12,
    "RTX 3090": 71e12,
}


def peak_flops(device) -> float | None:
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def peak_memory(device) -> int:
    """Bytes: the GPU's peak allocation, or the process's peak resident set on the CPU."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
