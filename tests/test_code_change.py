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


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``make(name, source)``: a module of the test's own, imported here (so the client sends
    it by value); ``edit(module, source)`` changes it on disk and reloads it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made = []

    def make(name, source):
        write(tmp_path / f"{name}.py", source)
        made.append(name)
        return importlib.import_module(name)

    def edit(module, source):
        write(tmp_path / f"{module.__name__}.py", source)
        return importlib.reload(module)
    yield make, edit
    for name in made:
        sys.modules.pop(name, None)


def test_the_callback_hears_of_an_edited_module_before_the_job(make_daemon, user_module):
    daemon = make_daemon(HOOKED)
    make, edit = user_module
    step = make("editedstep", "def value():\n    return 1\n")
    with daemon.client() as client:
        assert client.submit(step.value).result(timeout=60) == 1
        assert client.submit(step.value).result(timeout=60) == 1  # unchanged: no call
        step = edit(step, "def value():\n    return 22  # edited\n")
        assert client.submit(step.value).result(timeout=60) == 22
        assert client.submit(helpers_jobs.code_changes).result(timeout=60) == [["editedstep"]]


def test_an_error_in_the_callback_fails_that_job_and_says_so(make_daemon, user_module):
    daemon = make_daemon(HOOKED)
    make, edit = user_module
    step = make("brokenstep", "def value():\n    return 1\n")
    with daemon.client() as client:
        assert client.submit(step.value).result(timeout=60) == 1
        step = edit(step, "def value():\n    return 333\n")
        with pytest.raises(RuntimeError, match="could not refresh its caches"):
            client.submit(step.value).result(timeout=60)
        assert client.submit(step.value).result(timeout=60) == 333  # told once


def test_outside_a_worker_it_is_a_no_op():
    def callback(names):
        raise AssertionError("never called outside a worker")
    assert warmd.on_code_change(callback) is callback
