"""A short run of the coverage-guided fuzz target over the frame reader and the request
handlers (``make fuzz`` runs a million inputs). It fails on any uncaught exception,
any error the daemon logs and any internal_error reply."""
from __future__ import annotations

import importlib.util
import resource
import subprocess
import sys
from pathlib import Path

import pytest

TARGET = Path(__file__).resolve().parent / "fuzz" / "fuzz_requests.py"
RUNS = 20_000


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris is not installed (pip install atheris; x86_64 wheels only)")
def test_a_short_fuzz_run_finds_no_uncaught_exception(tmp_path):
    # libFuzzer's memory limit is on the peak RSS the kernel reports, and Linux carries that
    # peak over from this process through fork and exec (a 1 GiB array test before this
    # one would count): allow the usual 2 GiB above what this process has used.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    run = subprocess.run([sys.executable, str(TARGET), f"-runs={RUNS}", "-seed=1", "-max_len=4096",
                          f"-rss_limit_mb={inherited_mb + 2048}",
                          f"-artifact_prefix={tmp_path}/"], capture_output=True, text=True,
                         timeout=110, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert f"fuzz_requests: {RUNS} inputs" in output
    assert not list(tmp_path.glob("crash-*"))
