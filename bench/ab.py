"""Before/after for one change to warmd: the same dispatch loop against two copies of
warmd, alternating between them in one run, so machine noise hits both alike.

    bench/.venv/bin/python bench/ab.py BEFORE [AFTER] [--rounds 6] [--calls 1000] [--pipelined]
                                       [--user-modules]

BEFORE and AFTER are directories holding the ``warmd`` package (such as a copy of
daemon/ taken before an edit) or git revisions; AFTER defaults to this checkout.
Each round starts a fresh daemon from one copy in a subprocess whose client,
daemon and workers all import that copy. ``--user-modules`` has the client import
the benchmark's own modules first, as ``run.py`` does: calls then name seven user
modules (38 kB of source) rather than two.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["AB_BENCH"])
import common
common.setup_environment()
import jobs
from common import Daemon
calls, pipelined = int(sys.argv[1]), sys.argv[2] == "1"
if sys.argv[3] == "1":
    import cancel, peers, platejob, sections  # noqa: F401
import warmd
assert warmd.__file__.startswith(os.environ["AB_TREE"]), warmd.__file__
with Daemon("[workers]\ncount = 1\nspares = 1\n", "ab") as d:
    d.wait_warm(2)
    with d.client() as c:
        for _ in range(200):
            c.submit(jobs.noop).result()
        out = []
        if pipelined:
            for _ in range(5):
                t = time.perf_counter(); list(c.map(jobs.noop, range(calls))); out.append(calls / (time.perf_counter() - t))
        else:
            for _ in range(calls):
                t = time.perf_counter(); c.submit(jobs.noop).result(); out.append((time.perf_counter() - t) * 1e6)
print(json.dumps(out))
"""


def tree(spec: str | None) -> Path:
    if spec is None:
        return REPO / "daemon"
    if os.path.isdir(spec):
        return Path(spec).resolve()
    dest = Path(tempfile.mkdtemp(prefix=f"ab-{spec[:12]}-", dir="/tmp"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", spec, "daemon"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "daemon"


def measure(path: Path, calls: int, pipelined: bool, user_modules: bool) -> list[float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), str(BENCH)]), AB_BENCH=str(BENCH),
               AB_TREE=str(path))
    out = subprocess.run([sys.executable, "-c", CHILD, str(calls), "1" if pipelined else "0",
                          "1" if user_modules else "0"], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"round failed for {path}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("before")
    p.add_argument("after", nargs="?")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--pipelined", action="store_true")
    p.add_argument("--user-modules", action="store_true", help="the client has run.py's modules loaded")
    args = p.parse_args()
    trees = {"before": tree(args.before), "after": tree(args.after)}
    got: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
            got[name] += measure(trees[name], args.calls, args.pipelined, args.user_modules)
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    unit = "jobs/s" if args.pipelined else "µs"
    for name, values in got.items():
        s = sorted(values)
        p50, p99 = s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.99))]
        print(f"{name:6s} {trees[name]}: p50 {p50:,.0f} {unit}, p99 {p99:,.0f} {unit}, mean "
              f"{statistics.fmean(values):,.0f} ({len(values)} samples)")
    b, a = (sorted(got[k])[len(got[k]) // 2] for k in ("before", "after"))
    print(f"after/before p50: {a / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
