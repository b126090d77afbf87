"""Job functions the job tests run (importable by the worker subprocess as tests.jobs_for_tests)."""

from __future__ import annotations

import time

from internlocal.errors import UserError


def count(ctx, n: int, delay: float = 0.05):
    """Counts to n, saving its position each step: cancel/kill it and resume it."""
    start = ctx.state.get("i", 0)
    for i in range(start, n):
        ctx.check_cancelled()
        time.sleep(delay)
        ctx.state["i"] = i + 1
        ctx.save_state()
        ctx.progress(i + 1, n, unit="items")
        ctx.metric(step=i + 1, value=(i + 1) ** 2)
    return {"counted": n, "resumed_from": start}


def fail_clearly(ctx):
    raise UserError("The dataset file is empty; add some rows.")


def crash(ctx):
    return 1 / 0


def stops_slowly(ctx, catalog_path: str, run_id: int, wind_down_s: float):
    """A training job's stop: the run reads ``stopped`` while the job still winds down; resumed, it finishes."""
    from internlocal.catalog.catalog import Catalog
    from internlocal.jobs.context import JobCancelled

    if ctx.state.get("stopped"):
        return {"resumed": True}
    catalog = Catalog(catalog_path)
    catalog.update_train_run(run_id, status="stopped")
    catalog.close()
    ctx.save_state({"stopped": True})
    time.sleep(wind_down_s)
    raise JobCancelled()


def starts_a_child(ctx, pid_file: str):
    """Starts a long child process the way jobs start theirs (owned_child), then works until cancelled or killed."""
    import subprocess
    from pathlib import Path

    from internlocal.jobs.processes import owned_child

    child = subprocess.Popen(["sleep", "600"], preexec_fn=owned_child())
    Path(pid_file).write_text(str(child.pid))
    while True:
        ctx.check_cancelled()
        time.sleep(0.05)


def never_checks(ctx, pid_file: str):
    """Stuck where it never calls check_cancelled (a hung native call), with a child of its own; resumed, it ends."""
    import subprocess
    from pathlib import Path

    from internlocal.jobs.processes import owned_child

    if ctx.state.get("started"):
        return {"resumed": True}
    child = subprocess.Popen(["sleep", "600"], preexec_fn=owned_child())
    Path(pid_file).write_text(str(child.pid))
    ctx.save_state({"started": True})
    time.sleep(600)
