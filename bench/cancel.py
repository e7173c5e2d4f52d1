"""4. Cancel latency: from the cancel request until every job process is reaped, and until
the next job's first line runs; warmd against a Popen + killpg runner (popen_runner.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil

import jobs
from common import BENCH, Daemon, pythonpath, summary

CONFIG = "[workers]\ncount = 1\nspares = 1\n"
# (job, cancel mode, interrupt grace, terminate grace)
CASES = {
    "cooperative": (jobs.sleeper, "interrupt", 1.0, 1.0),
    "stuck": (jobs.stuck, "interrupt", 0.05, 0.05),
    "forced": (jobs.sleeper, "kill", 0.05, 0.05),
}


def _started(future) -> tuple[int, int]:
    """Wait for the job's "started PID" line; return that pid and the worker's."""
    from warmd.client.events import Output, StateChange
    worker, text = None, ""
    for event in future.events():
        if isinstance(event, StateChange) and event.worker_pid:
            worker = event.worker_pid
        if isinstance(event, Output) and event.stream == "stdout":
            text += event.text  # a line may come in more than one piece
            if "\n" in text:
                return int(text.split()[1]), worker
    raise RuntimeError(f"job ended before it started: {future.result()}")


def _wait_pool(client, workers: int = 2, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ws = client.status().workers
        if sum(w.state == "idle" for w in ws) >= workers and len(ws) == workers:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"pool did not refill: {ws}")
        time.sleep(0.005)


def _warmd_once(client, case: str) -> dict:
    fn, mode, igrace, tgrace = CASES[case]
    _wait_pool(client)  # every run starts from a full pool: a warm worker and a spare
    future = client.submit(fn)
    job_pid, worker_pid = _started(future)
    t0 = time.monotonic()
    outcome = client.cancel(future.job_id, mode, interrupt_grace=igrace, terminate_grace=tgrace)
    t1 = time.monotonic()
    # Everything of the job must be gone: its child (cooperative) or its whole worker.
    gone = not _exists(job_pid) and (case == "cooperative" or not _exists(worker_pid))
    first_line = client.submit(jobs.now).result()
    return {"cancel": t1 - t0, "next": first_line - t0, "outcome": outcome, "reaped": gone}


def _exists(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _popen(case: str, runs: int) -> list[dict]:
    _, _, igrace, tgrace = CASES[case]
    out = subprocess.run([sys.executable, str(BENCH / "popen_runner.py"), case, str(runs),
                          str(igrace), str(tgrace)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=pythonpath()))
    return json.loads(out.stdout)


def cancel(cfg, log) -> list[dict]:
    runs, rounds = cfg["cancel_runs"], cfg["cancel_rounds"]
    results: dict[tuple[str, str], list[dict]] = {}
    started = time.monotonic()
    with Daemon(CONFIG, "cancel") as daemon:
        daemon.wait_warm(2)
        with daemon.client() as client:
            for r in range(rounds):
                for case in CASES:
                    n = runs[case] // rounds
                    results.setdefault(("warmd", case), []).extend(
                        _warmd_once(client, case) for _ in range(n))
                    results.setdefault(("Popen + killpg", case), []).extend(_popen(case, n))
                log(f"  cancel round {r + 1}/{rounds} ({time.monotonic() - started:.0f} s)")
    rows = []
    for (peer, case), values in results.items():
        c = summary([v["cancel"] * 1e3 for v in values])
        nxt = summary([v["next"] * 1e3 for v in values])
        extra = {}
        if peer == "warmd":
            extra["not_reaped"] = sum(not v["reaped"] for v in values)
            extra["outcomes"] = sorted({v["outcome"] for v in values})
        rows.append({"section": "cancel", "metric": f"{case} cancel", "peer": peer, "value": c["p50"],
                     "unit": "ms", "p99": c["p99"], "n": c["n"], "next_p50": nxt["p50"],
                     "next_p99": nxt["p99"], "interrupt_grace_ms": CASES[case][2] * 1e3,
                     "terminate_grace_ms": CASES[case][3] * 1e3, **extra})
    return rows
