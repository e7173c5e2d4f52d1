"""Run one job (a pickled call, a script or a code string) and describe its outcome."""
from __future__ import annotations

import builtins
import io
import linecache
import logging
import os
import pickle
import runpy
import sys
import traceback
import zipfile
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from ..codepaths import is_user_module
from .. import jobstdin, oob
from ..protocol import Frame
from . import resultpickle
from .usercode import UserCode


@dataclass(frozen=True)
class Limits:
    """What the daemon accepts back: daemon.max_frame, buffers.min_bytes and max_bytes."""
    max_frame: int
    buffer_min: int = oob.MIN_BUFFER
    buffer_max: int = 0


@dataclass
class Outcome:
    state: str                       # succeeded | failed | cancelled
    exit_status: int = 0
    error: dict[str, str] | None = None
    payload: bytes = b""             # pickled result or exception
    extra: dict[str, Any] = field(default_factory=dict)
    files: tuple = ()                # the result's buffers' memfds (see warmd.oob)

    def header(self) -> dict[str, Any]:
        return {"t": "done", "state": self.state, "exit_status": self.exit_status,
                "error": self.error, **self.extra}


def run(frame: Frame, is_cancelled, usercode: UserCode, limits: Limits, keep_modules: bool = False) -> Outcome:
    """Execute the job described by a "run" frame; never raises except KeyboardInterrupt.
    ``keep_modules``: a session's call, whose modules stay imported for its next calls."""
    header = frame.header
    saved = ProcessState.save(modules=not keep_modules)
    try:
        cwd = header.get("cwd") or saved.cwd
        if cwd != saved.cwd:
            os.chdir(cwd)
    except (OSError, TypeError, ValueError):
        pass  # the client's directory may not exist for the worker: stay where we are
    _apply_environment(header.get("env"), header.get("env_mode"))
    if header.get("log_level"):
        logging.getLogger().setLevel(str(header["log_level"]).upper())
    try:
        result = _dispatch(frame, usercode)
    except SystemExit as exc:
        return _exit_outcome(exc)
    except KeyboardInterrupt as exc:
        if is_cancelled():
            return Outcome("cancelled", 130, _error(exc, "job cancelled"))
        return _exception_outcome(exc)
    except BaseException as exc:
        if is_cancelled():
            return Outcome("cancelled", 130, _error(exc))
        return _exception_outcome(exc)
    finally:
        usercode.clear()
        saved.restore(forget_modules=not keep_modules)
    if header.get("kind") != "call":
        return Outcome("succeeded", 0)
    try:
        pickled = resultpickle.dumps(result, limits.buffer_min)
    except KeyboardInterrupt as exc:
        if is_cancelled():
            return Outcome("cancelled", 130, _error(exc, "job cancelled"))
        return _unpicklable_result(exc)
    except BaseException as exc:  # SystemExit from a __reduce__ too: the worker lives on
        return _unpicklable_result(exc)
    del result
    if len(pickled.payload) > limits.max_frame:
        return _too_large(f"the job's result pickles to {len(pickled.payload)} bytes (its arrays "
                          f"apart), over the daemon's limit of {limits.max_frame} (daemon.max_frame)")
    if limits.buffer_max and pickled.buffer_bytes > limits.buffer_max:
        return _too_large(f"the job's result holds {pickled.buffer_bytes} bytes of arrays, over the "
                          f"daemon's limit of {limits.buffer_max} (buffers.max_bytes)")
    return Outcome("succeeded", 0, None, pickled.payload,
                   {"buffers": pickled.buffers} if pickled.buffers else {}, tuple(pickled.files))


def _unpicklable_result(exc: BaseException) -> Outcome:
    """The pickling error itself, as the client raises it (its own type where it unpickles
    there), noted with what failed."""
    if not isinstance(exc, Exception):  # SystemExit and kin: raised in the client, they would end it
        error = pickle.PicklingError(f"pickling the job's result raised {_qualname(type(exc))}: {exc}")
        error.__cause__, exc = exc, error
    exc.add_note("(raised by warmd while pickling the job's result to send it back)")
    outcome = _exception_outcome(exc)
    outcome.error["message"] = f"the job's result could not be pickled: {outcome.error['message']}"
    return outcome


def _too_large(message: str) -> Outcome:
    return Outcome("failed", 1, {"type": "FrameTooLarge", "traceback": "",
                                 "message": message + ": write large results to a file and return its path"})


def _dispatch(frame: Frame, usercode: UserCode) -> Any:
    header, payload = frame.header, frame.payload
    kind = header.get("kind")
    argv = list(header.get("argv") or [])
    if kind == "call":
        usercode.install(header.get("modules") or {})  # MissingSource: a daemon bug, said plainly
        try:
            paths = header.get("paths") or []
            sys.path[:0] = [p for p in paths if p not in sys.path]
            buffers = header.get("buffers")
            load = call_loader(usercode.results) if usercode.results else cloudpickle.loads
            files = jobstdin.split(header, frame.files)[0]
            fn, args, kwargs = oob.loads(payload, buffers, files, load)
        except oob.BadBuffers as exc:
            raise JobLoadError(f"the job's arrays did not arrive whole: {exc}") from None
        except Exception as exc:
            raise JobLoadError(f"the job could not be unpickled in the worker: "
                               f"{type(exc).__name__}: {exc}. Is the module installed in the "
                               "daemon's environment?") from exc
        return fn(*args, **kwargs)
    if kind == "script":
        path = header["path"]
        sys.argv = [path, *argv]
        if not os.path.isdir(path) and not zipfile.is_zipfile(path):
            sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # run_path adds a dir or zip
        runpy.run_path(path, run_name="__main__")
        return None
    if kind == "module":
        sys.argv = ["-m", *argv]  # run_module puts the module's file in argv[0], as python -m
        sys.path.insert(0, os.getcwd())
        runpy.run_module(header["module"], run_name="__main__", alter_sys=True)
        return None
    if kind == "code":
        sys.argv = ["-c", *argv]
        sys.path.insert(0, "")
        source = payload.decode()
        # Let tracebacks quote the code string's lines, as they do for files.
        linecache.cache["<warmd -c>"] = (len(source), None, source.splitlines(True), "<warmd -c>")
        code = compile(source, "<warmd -c>", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": builtins})
        return None
    raise JobLoadError(f"unknown job kind {kind!r}")


_MAX_EXCEPTION = 1 << 20  # a pickled exception larger than this travels as text only


class JobLoadError(Exception):
    """The worker could not turn the job's payload into something to run."""


class _CallLoader(pickle.Unpickler):
    """Unpickles a call, putting other jobs' results in place of their references
    (``warmd.ref``): the client pickled each as a call of ``warmd.client.refs.resolve``,
    which here means this call's results, each unpickled once."""

    def __init__(self, file: io.BytesIO, results: dict[str, tuple[Any, list, tuple]],
                 buffers: Any = None) -> None:
        super().__init__(file, buffers=buffers)
        self.results = results
        self.values: dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("warmd.client.refs", "resolve"):
            return self.resolve
        return super().find_class(module, name)

    def resolve(self, job_id: str) -> Any:
        if job_id not in self.values:
            if job_id not in self.results:
                raise JobLoadError(f"the result of job {job_id}, which this call takes, did not "
                                   "reach the worker (a bug in warmd)")
            data, buffers, files = self.results[job_id]
            self.values[job_id] = oob.loads(data, buffers, files, cloudpickle.loads) if data else None
        return self.values[job_id]


def call_loader(results: dict[str, tuple[Any, list, tuple]]) -> Any:
    """``pickle.loads`` for a call that takes other jobs' results by reference."""
    def load(data: Any, buffers: Any = None) -> Any:
        return _CallLoader(io.BytesIO(data), results, buffers).load()
    return load


# Variables that belong to the worker, whatever environment a job asks for: the device it
# is pinned to and warmd's own settings.
WORKER_VARIABLES = ("CUDA_VISIBLE_DEVICES",)
WORKER_PREFIXES = ("WARMD_",)


def _owned(name: str) -> bool:
    return name in WORKER_VARIABLES or name.startswith(WORKER_PREFIXES)


def _apply_environment(env: dict[str, str] | None, mode: str | None) -> None:
    """The job's environment: ``env`` in place of the worker's ("replace") or on top of it
    ("update"), the worker's own variables kept. ``ProcessState`` puts it back after."""
    if env is None:
        return
    if mode != "update":
        for name in [n for n in os.environ if n not in env and not _owned(n)]:
            del os.environ[name]
    for name, value in env.items():
        if not _owned(name):
            os.environ[name] = value


class ProcessState:
    """Interpreter state a job may change that must not leak into the next job."""

    def __init__(self, modules: bool = True) -> None:
        self.log_level = logging.getLogger().level
        self.cwd = os.getcwd()
        self.argv = list(sys.argv)
        self.path = list(sys.path)
        self.modules = set(sys.modules) if modules else set()  # not needed when none are forgotten
        # os.environ's raw bytes mapping: a C-level copy and compare, not a decode per variable.
        self.environ = dict(os.environ._data)  # type: ignore[attr-defined]
        self.streams = (sys.stdin, sys.stdout, sys.stderr)

    @classmethod
    def save(cls, modules: bool = True) -> "ProcessState":
        return cls(modules)

    def restore(self, forget_modules: bool = True, forget_sent: bool = False) -> None:
        """Put the saved state back; forget the user's modules imported since, those the
        client sent by value too when ``forget_sent`` (a session's, at its end)."""
        root = logging.getLogger()
        if root.level != self.log_level:  # setLevel clears every logger's cache
            root.setLevel(self.log_level)
        os.chdir(self.cwd)
        sys.argv[:] = self.argv
        sys.path[:] = self.path
        sys.stdin, sys.stdout, sys.stderr = self.streams
        if os.environ._data != self.environ:  # type: ignore[attr-defined]
            for key in [k for k in os.environ._data if k not in self.environ]:  # type: ignore[attr-defined]
                os.unsetenv(key)
            for key, value in self.environ.items():
                os.putenv(key, value)
            os.environ._data.clear()  # type: ignore[attr-defined]
            os.environ._data.update(self.environ)  # type: ignore[attr-defined]
        # Forget the user's own modules this job imported from disk, so the next job re-reads
        # them; modules the client sent by value stay, checked against the next run's list.
        for name in (sys.modules.keys() - self.modules) if forget_modules else ():
            module = sys.modules.get(name)
            if module is not None and is_user_module(module) and (forget_sent or not hasattr(module, "__warmd_sha__")):
                del sys.modules[name]


def _error(exc: BaseException, message: str | None = None) -> dict[str, str]:
    return {"type": _qualname(type(exc)), "message": message if message is not None else str(exc),
            "traceback": "".join(traceback.format_exception(exc))}


def _qualname(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


def _exception_outcome(exc: BaseException) -> Outcome:
    # Drop our own frames (run, _dispatch) so the traceback starts at the job's code.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, "<frozen runpy>"):
        tb = tb.tb_next
    exc = exc.with_traceback(tb)  # None when all of it was ours: a SyntaxError in -c code, say
    try:
        data = cloudpickle.dumps(exc)
    except Exception:
        data = b""
    if len(data) > _MAX_EXCEPTION:
        data = b""  # the text form still travels
    return Outcome("failed", 1, _error(exc), data)


def _exit_outcome(exc: SystemExit) -> Outcome:
    code = exc.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF if code >= 0 else 1
    else:
        print(code, file=sys.stderr)
        status = 1
    if status == 0:
        return Outcome("succeeded", 0)
    return Outcome("failed", status, {"type": "SystemExit", "message": f"exit status {status}",
                                      "traceback": ""})
