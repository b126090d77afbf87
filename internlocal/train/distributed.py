"""The run's processes under torchrun: who this process is, the collectives the loop needs, DDP / FSDP2 wrapping.

One process (no torchrun) is a world of one: every collective is then a no-op that returns its input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = None  # set by the trainer once it knows the device (collectives place their tensors there)

    @classmethod
    def from_env(cls) -> Processes:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def leader(self) -> bool:
        """Rank 0 writes metrics, checkpoint metadata and the final model."""
        return self.rank == 0

    def start(self, on_gpu: bool) -> None:
        if self.world > 1:
            import torch
            import torch.distributed as dist

            dist.init_process_group("nccl" if on_gpu and torch.cuda.is_available() else "gloo")

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, *values) -> list[float]:
        """Each value (a number or a 0-d tensor) summed over all processes, in one all-reduce: one blocking round
        trip and one device-to-host copy, whatever the count."""
        import torch

        if self.world == 1 and not any(isinstance(v, torch.Tensor) for v in values):
            return [float(v) for v in values]
        device = self.device if self.device is not None else "cpu"
        tensor = torch.stack(
            [
                v.detach().to(device=device, dtype=torch.float64).reshape(())
                if isinstance(v, torch.Tensor)
                else torch.tensor(float(v), dtype=torch.float64, device=device)
                for v in values
            ]
        )
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor.tolist()

    def sum_tensor(self, tensor) -> None:
        """``tensor`` summed over all processes, in place."""
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor)

    def all_agree(self, flag: bool) -> bool:
        return self.sum(0.0 if flag else 1.0)[0] == 0.0


def wrap_for_processes(loss_module, model, strategy: str, processes: Processes):
    """What the loop calls forward on: the loss module itself (one process, or FSDP2, which shards in place:
    each decoder layer, then the rest) or a DDP wrapper around it."""
    if processes.world == 1:
        return loss_module
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]:
            fully_shard(layer)
        fully_shard(loss_module)
        return loss_module
    from torch.nn.parallel import DistributedDataParallel

    device = processes.device
    return DistributedDataParallel(loss_module, device_ids=[device.index] if device.type == "cuda" else None)
