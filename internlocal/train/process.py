"""The training process seen from the job: the command that starts it (one process, ``torchrun`` on one node,
or a c10d rendezvous across nodes), following its ``metrics.jsonl``, and one sentence when it dies.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from internlocal.catalog.schema import TrainRun
from internlocal.errors import UserError
from internlocal.jobs.context import JobContext
from internlocal.jobs.processes import owned_child
from internlocal.train.memory import GIB
from internlocal.train.metrics import MetricsTail
from internlocal.train.recipe import Recipe

STOP_GRACE_S = 120  # how long a cancelled run may take to write its checkpoint


def loop_command(run_dir: Path, gpus: int, resume: bool, nodes: int = 1, rdzv_endpoint: str | None = None) -> list[str]:
    if nodes > 1:  # every node runs this with the same endpoint; torchrun's c10d rendezvous assigns the ranks
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={nodes}",
            f"--nproc_per_node={gpus}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={rdzv_endpoint}",
            f"--rdzv_id={run_dir.name}",
            "-m",
            "internlocal.train.loop",
            str(run_dir),
        ]
    elif gpus > 1:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={gpus}",
            "-m",
            "internlocal.train.loop",
            str(run_dir),
        ]
    else:
        command = [sys.executable, "-m", "internlocal.train.loop", str(run_dir)]
    return command + (["--resume"] if resume else [])


def run_training_process(
    ctx: JobContext, run: TrainRun, run_dir: Path, recipe: Recipe, gpus: int, resume: bool
) -> dict[str, Any]:
    """Start the loop (``gpus`` processes), follow its metrics into job progress, turn a cancel into ``STOP``;
    the loop's result, or a ``UserError`` that says why it ended."""
    catalog = ctx.catalog
    assert run.id is not None
    (run_dir / "STOP").unlink(missing_ok=True)
    (run_dir / "result.json").unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    with (run_dir / "train.log").open("ab") as log:
        proc = subprocess.Popen(
            loop_command(run_dir, gpus, resume, recipe.nodes, recipe.rdzv_endpoint),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=owned_child(),
        )
    (run_dir / "pid").write_text(str(proc.pid))
    catalog.update_train_run(run.id, status="running")
    tail = MetricsTail(run_dir)
    stop_sent = None
    error = None
    last_event = time.monotonic()
    stalled = False
    while True:
        code = proc.poll()
        events, _ = tail.read()
        if events:
            last_event = time.monotonic()
            if stalled:
                stalled = False
                ctx.log("metrics arrive again")
        elif code is None and not stalled and time.monotonic() - last_event > recipe.watchdog_s:
            stalled = True  # the watchdog: a hung collective or a dead node looks like silence
            ctx.log(
                f"no metrics for {recipe.watchdog_s:.0f} s: the run may be stuck (a hung process or a lost rank); "
                f"`internlocal train stop {run.name}` checkpoints it if it still can",
                level="warning",
            )
            catalog.update_train_run(run.id, summary_json=json.dumps({"stalled_since": time.time()}))
        for event in events:
            kind = event.get("type")
            if kind == "step":
                ctx.progress(
                    event["step"],
                    event["total_steps"],
                    unit="steps",
                    message=f"loss {event['loss']:.4f} · "
                    + (  # preference tuning: how far apart the two answers' rewards are, and how often in order
                        f"margin {event['reward_margin']:.3f} · accuracy {event['reward_accuracy']:.0%} · "
                        if "reward_margin" in event
                        else ""
                    )
                    + f"{event['tokens_per_s']:.0f} tok/s · peak {event['peak_memory'] / GIB:.2f} GiB",
                )
            elif kind == "eval":
                ctx.log(
                    f"step {event['step']}: validation loss {event['val_loss']}"
                    + (
                        f", reward margin {event['val_reward_margin']}, preference accuracy "
                        f"{event['val_reward_accuracy']:.0%}, chosen more likely than rejected in "
                        f"{round(event['val_prefers_chosen'] * event['val_pairs'])}/{event['val_pairs']} held-out pairs"
                        if "val_reward_margin" in event
                        else ""
                    )
                    + "".join(f"\n  {s['prompt']} → {s['answer']}" for s in event.get("samples", []))
                )
            elif kind in ("checkpoint", "warning", "resumed", "stopped"):
                ctx.log(
                    f"{kind}: " + ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "t")),
                    level="warning" if kind == "warning" else "info",
                )
            elif kind == "error":
                error = event["message"]
        if code is not None:
            break
        if ctx.cancelled and stop_sent is None:
            (run_dir / "STOP").touch()  # checkpoint and exit at the next step
            stop_sent = time.monotonic()
        if stop_sent is not None and time.monotonic() - stop_sent > STOP_GRACE_S:
            proc.kill()
        time.sleep(0.5)
    result_file = run_dir / "result.json"
    if code == 0 and result_file.exists():
        return json.loads(result_file.read_text())
    if error:
        raise UserError(error)
    raise UserError(describe_failure(run_dir, code, run.name))


_FAILED_RANK = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\)\s*exitcode\s*:\s*(-?\d+)", re.S)


def describe_failure(run_dir: Path, code: int | None, run_name: str) -> str:
    """One sentence for a training process that died: which rank (torchrun's root cause), how, and where a
    resume continues; the log's last lines only when nothing better is known."""
    log = (run_dir / "train.log").read_text(errors="replace") if (run_dir / "train.log").exists() else ""
    checkpoints = (
        sorted((run_dir / "checkpoints").glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))
        if (run_dir / "checkpoints").exists()
        else []
    )
    where = f"resume continues from {checkpoints[-1].name}" if checkpoints else "resume starts it again"
    failed = _FAILED_RANK.search(log.split("Root Cause", 1)[-1])
    if failed:
        rank, _local, exitcode = (int(x) for x in failed.groups())
        how = f"was killed by signal {-exitcode}" if exitcode < 0 else f"exited with code {exitcode}"
        return (
            f"Rank {rank} of the run {how} and torchrun stopped the others ({where}: "
            f"`internlocal train resume {run_name}`)."
        )
    tail = log.strip().splitlines()[-3:]
    return (
        f"The training process ended with code {code} ({where}: `internlocal train resume {run_name}`): "
        + " | ".join(tail)
    )
