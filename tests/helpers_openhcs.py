"""OpenHCS's execution servers as processes, driven through OpenHCS's own client: the warmd
endpoint (``warmd-openhcs``) and the stock server (the launcher OpenHCS's GUI spawns).
Shared by tests/test_openhcs_endpoint.py and bench/openhcs/bench.py; needs OpenHCS."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from warmd.localdaemon import stop_process

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "openhcs"
WARM_CONFIG = ('[warmup]\nhooks = ["warmd.openhcs.warmup:warm"]\n'
               '[workers]\ncount = {count}\nspares = 0\nwarmup_timeout = 600\n')


def free_port() -> int:
    """A data port whose control port (+1000) is free too, on loopback and as IPC names."""
    while True:
        port = random.randrange(20000, 60000)
        try:
            for p in (port, port + 1000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        ipc = Path.home() / ".openhcs" / "ipc"
        if not any((ipc / f"openhcs-zmq-{p}.sock").exists() for p in (port, port + 1000)):
            return port


class Notifications:
    """A NOTIFY_SOCKET for a child: the sd_notify messages it sends (READY=1, STATUS=...)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ohn-", dir="/tmp"))
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.seen: list[str] = []

    def wait_for(self, prefix: str, alive: Callable[[], bool], timeout: float) -> str:
        """The first message line starting with ``prefix`` (RuntimeError if the child died)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if line.startswith(prefix):
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {prefix!r} within {timeout} s; saw {self.seen}")
            self.sock.settimeout(min(left, 1.0))
            try:
                self.seen += self.sock.recv(65536).decode().splitlines()
            except socket.timeout:
                if not alive():
                    raise RuntimeError(f"the process ended before {prefix!r}") from None

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the process that started it dies, however it dies (a
    benchmark or test killed must not leave servers holding gigabytes behind)."""
    import ctypes
    import signal
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """An OpenHCS execution server process and OpenHCS's own client attached to it."""

    def __init__(self, argv: list[str], port: int, log_path: Path, env: dict[str, str]) -> None:
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.notify = Notifications()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**env, "NOTIFY_SOCKET": str(self.notify.path)},
                                     preexec_fn=_die_with_parent)
        self.client: Any = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def attach(self, progress: Callable[[dict], None] | None = None, timeout: float = 120) -> Any:
        """OpenHCS's client, attached to this server (kept as ``client``)."""
        self.client = attach(self.port, self.alive, progress, timeout,
                             lambda: self.log_text()[-3000:])
        return self.client

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> int:
        if self.client is not None:
            try:
                self.client.disconnect()
            except Exception:
                pass
        code = stop_process(self.proc, self.tree()[1:])
        self._log.close()
        self.notify.close()
        return code


def attach(port: int, alive: Callable[[], bool], progress: Callable[[dict], None] | None = None,
           timeout: float = 120, why: Callable[[], str] = str) -> Any:
    """OpenHCS's client, attached as its GUI attaches (never starting a server itself)."""
    from openhcs.runtime.zmq_execution_client import ZMQExecutionClient
    client = ZMQExecutionClient(port=port, persistent=True, progress_callback=progress)
    deadline = time.monotonic() + timeout
    while not client.connect_existing(timeout=1.0):  # the stock server says nothing when bound
        if not alive() or time.monotonic() > deadline:
            raise RuntimeError(f"no server on port {port}:\n{why()}")
        time.sleep(0.1)
    return client


def endpoint(port: int, warmd_socket: Path, log_path: Path, *args: str,
             pythonpath: tuple[Path, ...] = ()) -> Server:
    """``warmd-openhcs`` on ``port``, using the warmd daemon at ``warmd_socket``; returns once
    it serves (READY=1: bound, answering)."""
    env = {**os.environ, "OPENHCS_CPU_ONLY": "true",
           "PYTHONPATH": os.pathsep.join(map(str, (*pythonpath, *_pythonpath())))}
    server = Server([sys.executable, "-m", "warmd.openhcs", "--port", str(port), "--socket",
                     str(warmd_socket), "--no-autostart", *args], port, log_path, env)
    server.notify.wait_for("READY=1", server.alive, timeout=120)
    return server


def stock_server(port: int, log_path: Path, pythonpath: tuple[Path, ...] = ()) -> Server:
    """OpenHCS's own execution server, started as its client starts it (its launcher)."""
    env = {**os.environ, "OPENHCS_CPU_ONLY": "true",
           "PYTHONPATH": os.pathsep.join(map(str, (*pythonpath, *_pythonpath())))}
    return Server([sys.executable, "-m", "openhcs.runtime.zmq_execution_server_launcher",
                   "--port", str(port), "--log-level", "WARNING"], port, log_path, env)


def _pythonpath() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


# --- runs, as the GUI submits them ------------------------------------------------------

def submission(plate: Path, steps: list, num_workers: int = 2,
               compile_artifact_id: str | None = None, **config: Any) -> Any:
    """A Run's request as the GUI makes it; ``config``: more GlobalPipelineConfig fields."""
    from openhcs.core.config import GlobalPipelineConfig, PipelineConfig
    from openhcs.core.pipeline_document import PipelineDocumentAuthority
    from openhcs.runtime.zmq_execution_client import OpenHCSExecutionSubmission
    document = PipelineDocumentAuthority.from_values(pipeline_config=PipelineConfig(),
                                                     pipeline_steps=steps)
    return OpenHCSExecutionSubmission(
        plate_id=str(plate), pipeline_document=document,
        global_config=GlobalPipelineConfig(num_workers=num_workers, **config),
        compile_artifact_id=compile_artifact_id)


def submit(client: Any, plate: Path, make_steps: Callable[[], list], num_workers: int = 2,
           **config: Any) -> str:
    """Compile, then run with the compile's artifact, as OpenHCS's GUI does; returns the
    run's execution id. ``make_steps()`` gives fresh steps (compiling consumes them)."""
    compiled = client.submit_compile(submission(plate, make_steps(), num_workers, **config))
    assert compiled.get("status") == "accepted", compiled
    done = wait(client, compiled["execution_id"])
    assert done.get("status") == "complete", done
    accepted = client.submit_pipeline(submission(plate, make_steps(), num_workers,
                                                 compile_artifact_id=compiled["execution_id"],
                                                 **config))
    assert accepted.get("status") == "accepted", accepted
    return accepted["execution_id"]


def wait(client: Any, execution_id: str) -> dict:
    return client.wait_for_completion(execution_id, poll_interval=0.05)


def run_plate(client: Any, plate: Path, make_steps: Callable[[], list],
              num_workers: int = 2, **config: Any) -> tuple[dict, float]:
    """One Run, from the compile request to the run's end; its status and seconds."""
    start = time.perf_counter()
    done = wait(client, submit(client, plate, make_steps, num_workers, **config))
    return done, time.perf_counter() - start


# --- plates and outputs -----------------------------------------------------------------

def fresh_plate(path: Path, **shape: Any) -> Path:
    """The synthetic plate at ``path``, made anew: a run writes its metadata into its input
    plate, and the next run reads the plate differently, so every compared run gets a
    fresh one (same seed, same pixels)."""
    sys.path.insert(0, str(EXAMPLE))
    import pipeline
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(output_dir(path), ignore_errors=True)
    return pipeline.make_plate(path, **shape)


def output_dir(plate: Path) -> Path:
    return plate.parent / f"{plate.name}_openhcs"


def output_files(plate: Path) -> dict[str, str]:
    """Every output file's bytes, hashed, by path within the output plate (locks aside).

    The output plate's ``openhcs_metadata.json`` is hashed as its JSON with the images'
    records (``source_projection``) in path order: each lane process adds its wells' records
    as they finish, so their order follows which well finished first, with OpenHCS's own
    pool as with warm workers."""
    root = output_dir(plate)
    return {str(p.relative_to(root)): _digest(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".lock"}


def _digest(path: Path) -> str:
    data = path.read_bytes()
    if path.name == "openhcs_metadata.json":
        metadata = json.loads(data)
        for entry in metadata.get("subdirectories", {}).values():
            entry.get("source_projection", []).sort(key=lambda r: r.get("virtual_path", ""))
        data = json.dumps(metadata, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()
