"""Checkpoints of a run: ``checkpoints/step-N/``, written whole or not at all.

A checkpoint is written to ``step-N.tmp``, fsynced and renamed, so a crash or a full disk leaves the
previous one intact. It holds the trainable weights and optimizer state (``trainable.pt`` and
``optimizer.pt``, or torch DCP shards under ``sharded/`` for FSDP and pretraining runs: DCP reshards
on load, so such a run resumes on another number of processes), the scheduler, scaler and RNG states
(``rng_scheduler.pt``) and the loop's position (``state.json``, written last: its presence marks a
complete checkpoint).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from internlocal.train.distributed import Processes


@dataclass
class TrainingParts:
    """What a checkpoint saves and restores besides the loop's position."""

    loss_module: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    trainable: list[tuple[str, Any]]
    device: Any


class Checkpoints:
    def __init__(self, folder: Path, processes: Processes, keep: int, emit: Callable[..., None]):
        self.folder, self.processes, self.keep, self.emit = folder, processes, keep, emit

    def complete(self) -> list[Path]:
        """The complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [
            p
            for p in self.folder.iterdir()
            if p.is_dir() and p.name.startswith("step-") and not p.name.endswith(".tmp") and (p / "state.json").exists()
        ]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def save(self, parts: TrainingParts, position: dict[str, Any], sharded: bool, reason: str) -> Path | None:
        """Write ``step-N`` for ``position["step"]``; on failure (a full disk) keep the previous one, warn and go
        on (None). Every process takes part: FSDP ranks write their own shards."""
        import numpy as np
        import torch

        step, leader = position["step"], self.processes.leader
        final = self.folder / f"step-{step}"
        if final.exists():
            return final
        tmp = self.folder / f"step-{step}.tmp"
        ok = True
        try:
            if leader:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            self.processes.barrier()
            if sharded:
                import torch.distributed.checkpoint as dcp

                dcp.save(_sharded_state(parts), checkpoint_id=str(tmp / "sharded"))
            elif leader:
                torch.save({n: p.detach().cpu().clone() for n, p in parts.trainable}, tmp / "trainable.pt")
                torch.save(parts.optimizer.state_dict(), tmp / "optimizer.pt")
            if leader:
                torch.save(
                    {
                        "scheduler": parts.scheduler.state_dict(),
                        "python": random.getstate(),
                        "numpy": np.random.get_state(),
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                        "scaler": parts.scaler.state_dict() if parts.scaler else None,
                    },
                    tmp / "rng_scheduler.pt",
                )
                (tmp / "state.json").write_text(json.dumps({**position, "reason": reason}))
                for f in tmp.rglob("*"):
                    if f.is_file():
                        with f.open("rb") as fh:
                            os.fsync(fh.fileno())
        except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
            ok = False
            if leader:
                shutil.rmtree(tmp, ignore_errors=True)
                previous = self.complete()
                why = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
                self.emit(
                    "warning",
                    message=f"checkpoint at step {step} failed ({why}); "
                    f"kept {previous[-1].name if previous else 'no earlier checkpoint'}",
                )
        if not self.processes.all_agree(ok):
            return None
        if leader:
            tmp.rename(final)
            for old in self.complete()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
            self.emit("checkpoint", step=step, path=str(final), reason=reason)
        self.processes.barrier()
        return final

    def restore(self, parts: TrainingParts) -> tuple[Path, dict[str, Any]] | None:
        """Load the newest complete checkpoint into ``parts`` and the RNGs; (its folder, the saved position), or
        None when there is none yet."""
        import numpy as np
        import torch

        found = self.complete()
        if not found:
            return None
        last = found[-1]
        position = json.loads((last / "state.json").read_text())
        if (last / "sharded").is_dir():
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            target = _sharded_state(parts)
            dcp.load(target, checkpoint_id=str(last / "sharded"))
            set_state_dict(
                parts.loss_module,
                parts.optimizer,
                model_state_dict=target["model"],
                optim_state_dict=target["optimizer"],
                options=StateDictOptions(ignore_frozen_params=True, strict=False),
            )
        else:
            saved = torch.load(last / "trainable.pt", map_location=parts.device)
            params = dict(parts.trainable)
            with torch.no_grad():
                for name, tensor in saved.items():
                    params[name].copy_(tensor)
            parts.optimizer.load_state_dict(torch.load(last / "optimizer.pt", map_location=parts.device))
        extra = torch.load(last / "rng_scheduler.pt", weights_only=False)
        parts.scheduler.load_state_dict(extra["scheduler"])
        random.setstate(extra["python"])
        np.random.set_state(extra["numpy"])
        torch.set_rng_state(extra["torch"])
        if extra.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(extra["cuda"])
        if parts.scaler and extra.get("scaler"):
            parts.scaler.load_state_dict(extra["scaler"])
        return last, position


def _sharded_state(parts: TrainingParts) -> dict[str, Any]:
    """Every rank's shards of the trainable weights and of the optimizer state (initialised if empty)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    model, optimizer = get_state_dict(
        parts.loss_module, parts.optimizer, options=StateDictOptions(ignore_frozen_params=True)
    )
    return {"model": model, "optimizer": optimizer}


def save_final_model(model, tokenizer, target: Path, fsdp: bool, processes: Processes) -> Path | None:
    """The trained weights (with the tokenizer) as a Hugging Face folder at ``target``, written to ``.tmp`` and
    renamed; under FSDP every rank takes part in gathering the full weights and the leader writes them. The
    folder on the leader, None elsewhere."""
    full = None
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    written = None
    if processes.leader:
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            model.save_pretrained(tmp, state_dict=full)
        else:
            model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        written = target
    processes.barrier()
    return written
