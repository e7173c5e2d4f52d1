"""warmd.on_code_change: a worker tells the application before a job whose user modules
changed since it last ran them, so caches of user functions can be refreshed."""
from __future__ import annotations

import importlib
import sys

import pytest

import warmd
import helpers_jobs

HOOKED = '[warmup]\nhooks = ["helpers_jobs:track_code_changes"]\n[workers]\ncount = 1\nspares = 0\n'


def write(path, text):
    path.write_text(text)
    importlib.invalidate_caches()


def test_the_callback_hears_of_an_edited_module_before_the_job(make_daemon, tmp_path, monkeypatch):
    daemon = make_daemon(HOOKED)
    monkeypatch.syspath_prepend(str(tmp_path))
    write(tmp_path / "editedstep.py", "def value():\n    return 1\n")
    import editedstep
    try:
        with daemon.client() as client:
            assert client.submit(editedstep.value).result(timeout=60) == 1
            assert client.submit(editedstep.value).result(timeout=60) == 1  # unchanged: no call
            write(tmp_path / "editedstep.py", "def value():\n    return 22  # edited\n")
            importlib.reload(editedstep)
            assert client.submit(editedstep.value).result(timeout=60) == 22
            assert client.submit(helpers_jobs.code_changes).result(timeout=60) == [["editedstep"]]
    finally:
        sys.modules.pop("editedstep", None)


def test_an_error_in_the_callback_fails_that_job_and_says_so(make_daemon, tmp_path, monkeypatch):
    daemon = make_daemon(HOOKED)
    monkeypatch.syspath_prepend(str(tmp_path))
    write(tmp_path / "brokenstep.py", "def value():\n    return 1\n")
    import brokenstep
    try:
        with daemon.client() as client:
            assert client.submit(brokenstep.value).result(timeout=60) == 1
            write(tmp_path / "brokenstep.py", "def value():\n    return 333\n")
            importlib.reload(brokenstep)
            with pytest.raises(RuntimeError, match="could not refresh its caches"):
                client.submit(brokenstep.value).result(timeout=60)
            assert client.submit(brokenstep.value).result(timeout=60) == 333  # told once
    finally:
        sys.modules.pop("brokenstep", None)


def test_outside_a_worker_it_is_a_no_op():
    def callback(names):
        raise AssertionError("never called outside a worker")
    assert warmd.on_code_change(callback) is callback
