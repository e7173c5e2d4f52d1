"""warmd's benchmark suite: `make bench` (or `make bench BENCH_ARGS=--quick`).

Measures warmd against what a user would otherwise use, in the same run on the
same machine, and prints ratios: dispatch latency, throughput, the plate
pipeline cold and warm, cancel latency, idle cost and cold start. Results go to
bench/results/ (JSON and a Markdown table). docs/benchmarks.md explains them.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

common.setup_environment()

FULL = {"warmup_calls": 300, "dispatch_calls": 3000, "dispatch_rounds": 5,
        "throughput_jobs": 2000, "throughput_rounds": 3, "pipeline_rounds": 10,
        "cancel_runs": {"cooperative": 200, "stuck": 200, "forced": 200}, "cancel_rounds": 4,
        "idle_seconds": 60.0, "coldstart_runs": 5, "fanout_rounds": 10,
        "array_sizes_mib": [1, 64, 1024], "array_rounds": 3}
QUICK = {"warmup_calls": 100, "dispatch_calls": 1000, "dispatch_rounds": 2,
         "throughput_jobs": 500, "throughput_rounds": 2, "pipeline_rounds": 3,
         "cancel_runs": {"cooperative": 20, "stuck": 20, "forced": 20}, "cancel_rounds": 2,
         "idle_seconds": 5.0, "coldstart_runs": 2, "fanout_rounds": 3,
        "array_sizes_mib": [1, 64], "array_rounds": 2}
SECTIONS = ("dispatch", "throughput", "pipeline", "cancel", "idle", "coldstart", "fanout", "arrays")

# The targets, checked (never asserted) at the end of a run.
DISPATCH_P50_VS_POOL = 1.0   # p50 and p99 both, against ProcessPoolExecutor's
SESSION_VS_WARMPOOL = 1.5    # a session's call p50 against warmpool's (one held worker each)
DASK_VS_WARMD = 40.0
THROUGHPUT_VS_POOL = 1.0     # one client pipelined, and 8 client threads
COLDSTART_VS_POOL = 2.0
PIPELINE_OVERHEAD_MS = 10.0
IDLE_CPU_PERCENT = 0.1
IDLE_WAKEUPS_PER_S = 0.1  # no watchdog outside systemd: nothing should wake the daemon
IDLE_RSS_MB = 40.0
FANOUT_EFFICIENCY = 0.9


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer calls and rounds (about a minute)")
    p.add_argument("--only", help=f"comma-separated sections ({', '.join(SECTIONS)})")
    p.add_argument("--idle-seconds", type=float, help="idle window (default 60, quick 5)")
    p.add_argument("--cancel-runs", type=int, help="runs per cancel case (default 200, quick 20)")
    p.add_argument("--label", default="", help="a note stored with the results (e.g. a commit)")
    p.add_argument("--out", default=str(common.BENCH / "results"), help="results directory")
    args = p.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.idle_seconds is not None:
        cfg["idle_seconds"] = args.idle_seconds
    if args.cancel_runs is not None:
        cfg["cancel_runs"] = {k: args.cancel_runs for k in cfg["cancel_runs"]}
    wanted = args.only.split(",") if args.only else list(SECTIONS)
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    import arrays
    import cancel
    import fanout
    import sections
    run = {"dispatch": sections.dispatch, "throughput": sections.throughput,
           "pipeline": sections.pipeline, "cancel": cancel.cancel, "idle": sections.idle,
           "coldstart": sections.coldstart, "fanout": fanout.fanout, "arrays": arrays.arrays}
    info = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "label": args.label,
            "mode": "quick" if args.quick else "full", "machine": common.machine(),
            "versions": common.versions(), "git": _git_head(), "config": cfg}
    missing = [k for k, v in info["versions"].items() if v == "MISSING"]
    if missing:
        log(f"!!! MISSING PEERS/TOOLS: {', '.join(missing)}: their rows will be absent")
    rows: list[dict] = []
    started = time.monotonic()
    for name in SECTIONS:
        if name not in wanted:
            continue
        log(f"== {name}")
        t = time.monotonic()
        rows.extend(run[name](cfg, log))
        log(f"   {name} took {time.monotonic() - t:.0f} s")
    info["seconds"] = round(time.monotonic() - started, 1)
    report = render(info, rows)
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / f"{stamp}.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1, default=str))
    (out / f"{stamp}.md").write_text(report + "\n")
    (out / "latest.md").write_text(report + "\n")
    log(f"results: {out / (stamp + '.json')} and {out / 'latest.md'}")
    return 0


def _git_head() -> str:
    try:
        import subprocess
        head = subprocess.run(["git", "-C", str(common.REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(common.REPO), "status", "--porcelain", "daemon"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "?"


# ---------------------------------------------------------------------------- report

def _f(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _ratio(a, b) -> str:
    if not a or not b:
        return "-"
    r = a / b
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)]


def _get(rows, section, peer, metric=None):
    for r in rows:
        if r["section"] == section and r["peer"] == peer and (metric is None or r["metric"] == metric):
            return r
    return None


def render(info: dict, rows: list[dict]) -> str:
    m, v = info["machine"], info["versions"]
    out = [f"# warmd benchmark ({info['mode']}, {info['when']}, git {info['git']}"
           f"{', ' + info['label'] if info['label'] else ''})", "",
           f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, "
           f"Python {m['python']}. Daemon sockets (and so the job ledger) under {m['runtime_dir']}. "
           f"Run took {info.get('seconds', '?')} s.",
           "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    sec = lambda s: [r for r in rows if r["section"] == s]  # noqa: E731

    if sec("dispatch"):
        floor = _get(rows, "dispatch", "floor: socketpair round trip")
        w = _get(rows, "dispatch", "warmd")
        out += ["## 1. Dispatch latency: submit a no-op, wait for its result (µs)", ""]
        out += _table(["peer", "p50", "p99", "mean", "calls", "p50 ÷ socket floor", "warmd p50 ÷ this p50"],
                      [[r["peer"], _f(r["value"]), _f(r["p99"]), _f(r["mean"]), str(r["n"]),
                        _ratio(r["value"], floor and floor["value"]), _ratio(w and w["value"], r["value"])]
                       for r in sec("dispatch")])
        out.append("")
    if sec("throughput"):
        out += ["## 2. Throughput: no-op jobs per second, one worker (median of rounds)", ""]
        body = []
        for r in sec("throughput"):
            w = _get(rows, "throughput", "warmd", r["metric"])
            fl = _get(rows, "throughput", "floor: socketpair round trip", r["metric"])
            body.append([r["metric"], r["peer"], _f(r["value"]), _ratio(w and w["value"], r["value"]),
                         _ratio(r["value"], fl and fl["value"]), r.get("note", "")])
        out += _table(["how", "peer", "jobs/s", "warmd ÷ this", "this ÷ socket floor", "note"], body)
        out.append("")
    if sec("pipeline"):
        cold = _get(rows, "pipeline", "cold: fresh python per run")
        out += ["## 3. Plate pipeline: one run (8 wells, 256x256, scipy + scikit-image steps), ms", ""]
        out += _table(["peer", "p50 wall", "min", "runs", "overhead: wall - steps timed in the worker (p50 / p99)",
                       "wall - in-process run (p50 diff / paired)", "cold ÷ this"],
                      [[r["peer"], _f(r["value"]), _f(r["min"]), str(r["n"]),
                        (f"{_f(r['overhead_self_ms'], 2)} / {_f(r['overhead_self_p99_ms'], 2)}"
                         if "overhead_self_ms" in r else "-"),
                        (f"{_f(r['overhead_ms'])} / {_f(r['overhead_paired_ms'])}" if "overhead_ms" in r else "-"),
                        _ratio(cold and cold["value"], r["value"])] for r in sec("pipeline")])
        out.append("")
    if sec("cancel"):
        out += ["## 4. Cancel: request to every job process reaped, and to the next job's first line (ms)", ""]
        body = []
        for r in sec("cancel"):
            base = _get(rows, "cancel", "Popen + killpg", r["metric"])
            note = (f"graces {r['interrupt_grace_ms']:g}/{r['terminate_grace_ms']:g} ms")
            if "not_reaped" in r:
                note += f"; not reaped: {r['not_reaped']}; outcome {'/'.join(r['outcomes'])}"
            body.append([r["metric"], r["peer"], _f(r["value"], 2), _f(r["p99"], 2), _f(r["next_p50"], 2),
                         _f(r["next_p99"], 2), str(r["n"]),
                         _ratio(r["value"], base and base["value"]), _ratio(r["next_p50"], base and base["next_p50"]),
                         note])
        out += _table(["case", "peer", "cancel p50", "p99", "next job p50", "p99", "runs",
                       "cancel ÷ Popen", "next ÷ Popen", "note"], body)
        out.append("")
    if sec("idle"):
        out += ["## 5. Idle cost, 2 warm workers", ""]
        out += _table(["process", "window s", "CPU %", "wakeups/s", "RSS MB", "USS MB", "threads", "note"],
                      [[r["peer"], f"{r['window_s']:.0f}", f"{r['value']:.3f}", f"{r['wakeups_per_s']:.2f}",
                        _f(r["rss_mb"]), _f(r["uss_mb"]), str(r["threads"]),
                        (f"WatchdogSec={r['watchdog_s']:g}: a ping every {r['watchdog_s'] / 2:g} s"
                         if r.get("watchdog_s") else "")] for r in sec("idle")])
        out.append("")
    if sec("coldstart"):
        w = _get(rows, "coldstart", "warmd autostart")
        out += ["## 6. Cold start: first connection to first result (ms)", ""]
        body = [[r["peer"], _f(r["value"]), _f(r.get("min")), str(r.get("n", "-")),
                 _ratio(w and w["value"], r["value"]), r.get("note", "") or
                 (f"connect (daemon serving) p50 {r['connect_ms']:.0f} ms" if "connect_ms" in r else "")]
                for r in sec("coldstart")]
        out += _table(["peer", "p50", "min", "runs", "warmd ÷ this", "note"], body)
        out.append("")
    if sec("fanout"):
        r0 = sec("fanout")[0]
        best = max(r["value"] for r in sec("fanout"))
        out += [f"## 7. Fan-out: {r0['metric']} (ideal {r0['ideal_ms']:.0f} ms; efficiency = ideal ÷ wall)", ""]
        out += _table(["peer", "efficiency", "wall p50 ms", "min ms", "runs", "÷ best"],
                      [[r["peer"], f"{r['value']:.3f}", _f(r["wall_ms"]), _f(r["min_ms"]), str(r["n"]),
                        _ratio(r["value"], best)] for r in sec("fanout")])
        out.append("")
    if sec("arrays"):
        out += ["## 8. Large arrays: the same numpy array in and out (MB/s of the array's size; daemon RSS)", ""]
        body = []
        for r in sec("arrays"):
            floor = _get(rows, "arrays", "floor: two memcpy", r["metric"])
            w = _get(rows, "arrays", "warmd", r["metric"])
            body.append([f"{r['mib']:g}", r["peer"], _f(r["value"], 0), _f(r["wall_ms"]),
                         _ratio(w and w["value"], r["value"]), _ratio(r["value"], floor and floor["value"]),
                         _f(r["daemon_rss_mib"], 0) if "daemon_rss_mib" in r else "-"])
        out += _table(["MiB", "peer", "MB/s", "wall ms", "warmd ÷ this", "this ÷ memcpy", "daemon peak RSS +MiB"],
                      body)
        out.append("")
    out += ["## Targets", ""] + targets(rows)
    return "\n".join(out)


def targets(rows: list[dict]) -> list[str]:
    lines = []

    def check(name: str, ok: bool | None, detail: str) -> None:
        mark = "n/a " if ok is None else ("MET " if ok else "MISS")
        lines.append(f"- [{mark}] {name}: {detail}")

    w, pool, dask = (_get(rows, "dispatch", n) for n in ("warmd", "ProcessPoolExecutor", "dask"))
    if w and pool:
        r = w["value"] / pool["value"]
        check(f"dispatch p50 within {DISPATCH_P50_VS_POOL}x of ProcessPoolExecutor", r <= DISPATCH_P50_VS_POOL,
              f"{w['value']:.0f} µs vs {pool['value']:.0f} µs = {r:.2f}x")
        r = w["p99"] / pool["p99"]
        check("dispatch p99 no more than ProcessPoolExecutor's", r <= DISPATCH_P50_VS_POOL,
              f"{w['p99']:.0f} µs vs {pool['p99']:.0f} µs = {r:.2f}x")
    s, wpool = _get(rows, "dispatch", "warmd session"), _get(rows, "dispatch", "warmpool")
    if s and wpool:
        r = s["value"] / wpool["value"]
        check(f"a session's call p50 within {SESSION_VS_WARMPOOL}x of warmpool", r <= SESSION_VS_WARMPOOL,
              f"{s['value']:.0f} µs vs {wpool['value']:.0f} µs = {r:.2f}x")
    if w and dask:
        r = dask["value"] / w["value"]
        check(f"dispatch at least {DASK_VS_WARMD:.0f}x faster than dask", r >= DASK_VS_WARMD,
              f"dask {dask['value']:.0f} µs ÷ warmd {w['value']:.0f} µs = {r:.1f}x")
    for how in ("1 client, pipelined", "8 client threads"):
        wt, pt = (_get(rows, "throughput", n, how) for n in ("warmd", "ProcessPoolExecutor"))
        if wt and pt:
            r = wt["value"] / pt["value"]
            check(f"throughput ({how}) at least {THROUGHPUT_VS_POOL}x ProcessPoolExecutor's",
                  r >= THROUGHPUT_VS_POOL, f"{wt['value']:.0f} vs {pt['value']:.0f} jobs/s = {r:.2f}x")
    wc, pc = (_get(rows, "coldstart", n) for n in ("warmd autostart", "ProcessPoolExecutor"))
    if wc and pc:
        r = wc["value"] / pc["value"]
        check(f"cold start (autostart to first result) within {COLDSTART_VS_POOL}x of ProcessPoolExecutor",
              r <= COLDSTART_VS_POOL, f"{wc['value']:.0f} ms vs {pc['value']:.0f} ms = {r:.2f}x")
    wp = _get(rows, "pipeline", "warmd")
    if wp:
        check(f"warm pipeline overhead under {PIPELINE_OVERHEAD_MS:.0f} ms",
              wp["overhead_self_ms"] < PIPELINE_OVERHEAD_MS,
              f"{wp['overhead_self_ms']:.2f} ms p50 (p99 {wp['overhead_self_p99_ms']:.2f} ms): wall minus the "
              f"steps timed in the worker; against a separate in-process run {wp['overhead_paired_ms']:.0f} ms "
              "paired, which is mostly machine noise")
    sd = _get(rows, "idle", "warmd daemon under systemd")
    if sd and sd.get("watchdog_s"):
        need = 2 / sd["watchdog_s"] * 1.5 + 0.05  # a ping at half the deadline, with slack
        check("idle daemon under systemd: no wakeups beyond the watchdog's", sd["wakeups_per_s"] <= need,
              f"{sd['wakeups_per_s']:.2f} wakeups/s with WatchdogSec={sd['watchdog_s']:g} "
              f"(pings need {2 / sd['watchdog_s']:.2f}/s), {sd['value']:.3f}% CPU")
    for peer in ("warmd: map from a front end", "warmd: map from a parent job"):
        f = _get(rows, "fanout", peer)
        if f:
            check(f"fan-out efficiency at least {FANOUT_EFFICIENCY} ({peer[7:]})", f["value"] >= FANOUT_EFFICIENCY,
                  f"{f['value']:.3f} ({f['wall_ms']:.0f} ms for an ideal {f['ideal_ms']:.0f} ms)")
    if sec_rows := [r for r in rows if r.get("section") == "arrays"]:
        import arrays  # its own targets, the same lines as arrays.py prints alone
        lines += arrays.targets(sec_rows)
    d = _get(rows, "idle", "warmd daemon")
    if d:
        check(f"idle daemon under {IDLE_CPU_PERCENT}% CPU", d["value"] < IDLE_CPU_PERCENT, f"{d['value']:.3f}%")
        check("idle daemon: no periodic wakeups (no watchdog outside systemd)",
              d["wakeups_per_s"] < IDLE_WAKEUPS_PER_S, f"{d['wakeups_per_s']:.2f} wakeups/s")
        check(f"idle daemon RSS under {IDLE_RSS_MB:.0f} MB", d["rss_mb"] < IDLE_RSS_MB, f"{d['rss_mb']:.1f} MB")
    return lines or ["- (no targeted section ran)"]


if __name__ == "__main__":
    sys.exit(main())
