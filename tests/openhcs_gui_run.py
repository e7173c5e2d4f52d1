#!/usr/bin/env python3
"""OpenHCS's own PyQt6 GUI, unmodified and offscreen, pressing Run on an execution server
that already answers on ``--port`` (warmd-openhcs): tests/test_openhcs_endpoint.py runs it
in a process of its own.

    python tests/openhcs_gui_run.py --port PORT --plate PLATE [--expect-pid PID] [--json OUT]

Everything the GUI writes goes to a temporary HOME (removed unless the run failed); its
UI configuration there names ``--port`` and the endpoint's IPC directory (the invoking
user's ``~/.openhcs/ipc``). It refuses to start the GUI unless a server already answers
(the GUI would start OpenHCS's own there). Then, on the GUI thread through QTimers (the
event loop never blocks): OpenHCS's launcher opens the main window; once its client is
connected, the script checks it attached (it owns no server process; the server's pid is
``--expect-pid``), presses Add and answers the real directory dialog with the plate, gives
the plate the example's three steps through the pipeline editor's code-mode save
(``apply_code_document_source``), presses Init, Compile and Run, waiting for the GUI's own
state between them, and waits for the plate manager's completion signal.

Exit status: 0 the run completed; 1 it failed or an error dialog appeared; 2 timed out;
3 no server answers on the port (the GUI was not started); 4 the GUI started its own
server or attached to another one.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

T0 = time.monotonic()


def say(*parts: object) -> None:
    print(f"[{time.monotonic() - T0:7.2f}s]", *parts, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="the running endpoint's data port")
    p.add_argument("--plate", type=Path, required=True, help="plate directory to add and run")
    p.add_argument("--ipc-dir", type=Path, default=None,
                   help="the endpoint's IPC socket directory (default: ~/.openhcs/ipc of the "
                        "HOME this script was started with)")
    p.add_argument("--timeout", type=float, default=600, help="seconds for the whole drive")
    p.add_argument("--expect-pid", type=int, default=None,
                   help="fail unless the attached server's pid is this one")
    p.add_argument("--json", type=Path, default=None, help="write what was observed here")
    return p.parse_args()


ARGS = parse_args()
PLATE = ARGS.plate.resolve()
REAL_HOME = Path.home()
IPC_DIR = (ARGS.ipc_dir or REAL_HOME / ".openhcs" / "ipc").resolve()
HOME = Path(tempfile.mkdtemp(prefix="ohgui-", dir="/tmp")).resolve()

# --- 1. isolation: everything the GUI writes goes under HOME ----------------------------
for sub in (".config", ".cache", ".local/share", "run"):
    (HOME / sub).mkdir(parents=True, exist_ok=True)
os.chmod(HOME / "run", 0o700)
os.environ.update({
    "HOME": str(HOME),
    "XDG_CONFIG_HOME": str(HOME / ".config"),
    "XDG_CACHE_HOME": str(HOME / ".cache"),
    "XDG_DATA_HOME": str(HOME / ".local/share"),
    "XDG_RUNTIME_DIR": str(HOME / "run"),
    "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen"),
    "OPENHCS_CPU_ONLY": "true",
    "OPENHCS_ENABLE_UI_BRIDGE": "false",
    "OPENHCS_UI_CONFIG_CACHE_FILE": str(HOME / "ui_config.config"),
})
sys.argv = [sys.argv[0]]  # QApplication gets argv; launch.main gets a Namespace

say(f"GUI HOME={HOME} port={ARGS.port} ipc_dir={IPC_DIR}")
t_import = time.monotonic()
from zmqruntime.config import TransportMode  # noqa: E402

from openhcs.core.config import GlobalPipelineConfig  # noqa: E402
from openhcs.core.config_cache import save_global_config_sync  # noqa: E402
from openhcs.pyqt_gui.config import (  # noqa: E402
    AgentUiBridgeConfig, LoggingConfig, UIConfig, save_ui_config_sync, ui_config_cache_spec)
from openhcs.runtime.zmq_config import OpenHCSZMQConfig  # noqa: E402

ZMQ = OpenHCSZMQConfig(default_port=ARGS.port, transport_mode=TransportMode.IPC,
                       ipc_socket_dir=str(IPC_DIR), client_host="127.0.0.1")
UI = UIConfig(check_for_updates_on_startup=False, zmq=ZMQ,
              agent_bridge=AgentUiBridgeConfig(enabled=False),
              logging=LoggingConfig(enable_console_logging=False))
assert save_ui_config_sync(UI), "could not save the UI config"
assert save_global_config_sync(GlobalPipelineConfig(num_workers=2))
say(f"UI config written: {ui_config_cache_spec().cache_file} (execution port {ARGS.port})")

# --- 2. a server must already answer: never let the GUI start its own ---------------------
from openhcs.runtime.zmq_execution_client import ZMQExecutionClient  # noqa: E402

probe = ZMQExecutionClient(config=ZMQ, port=ARGS.port, persistent=False)
try:
    if not probe.connect_existing(timeout=5.0):
        say(f"FAIL: no execution server answers on port {ARGS.port}; not starting the GUI")
        sys.exit(3)
    pong = probe.connected_endpoint
    say(f"probe: server on port {ARGS.port}: type={pong.server_type} "
        f"pid={pong.process_identity.pid if pong.process_identity else None}")
finally:
    probe.disconnect()

from PyQt6.QtCore import QTimer  # noqa: E402
from PyQt6.QtWidgets import QApplication, QFileDialog, QMessageBox  # noqa: E402

from openhcs.gui_startup import GuiStartupProgressReporterABC  # noqa: E402
from openhcs.pyqt_gui import launch  # noqa: E402

say(f"imports took {time.monotonic() - t_import:.1f}s")


def example_pipeline_code() -> str:
    """The example's three steps as the pipeline editor's code mode renders them."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "openhcs"))
    import pipeline
    from openhcs.core.pipeline_document import PipelineDocumentAuthority
    return PipelineDocumentAuthority.render(
        PipelineDocumentAuthority.from_values(pipeline_config=pipeline.pipeline_config(),
                                              pipeline_steps=pipeline.make_pipeline()),
        clean_mode=True)


class Driver:
    """A state machine stepped by a QTimer; never blocks the GUI thread."""

    def __init__(self, app: QApplication) -> None:
        self.app = app
        self.win = app.main_window
        self.pm = self.win.plate_manager_widget
        self.pe = self.win.pipeline_editor_widget
        self.result: dict = {"port": ARGS.port, "plate": str(PLATE), "home": str(HOME),
                             "status_messages": [], "connection": [], "dialogs": [],
                             "errors": [], "timings": {}}
        self.pipeline_code: str | None = None
        self.exit_code: int | None = None
        self._last_child_check = 0.0
        self.scope: str | None = None
        self.completion = None
        self.want_dir_dialog = False
        self.state = "connect"
        self.state_since = time.monotonic()
        self.deadline = time.monotonic() + ARGS.timeout
        self._busy = False
        self._clicked = False
        # Observe, never replace, the GUI's own signals.
        self.pm.status_message.connect(lambda m: self._note("status_messages", "status", m))
        self.pm.zmq_connection_status_changed.connect(
            lambda s: self._note("connection", "connection", f"{s.phase.value}: {s.message}"))
        for sig in ("execution_error", "compilation_error", "initialization_error"):
            getattr(self.pm, sig).connect(
                lambda *a, sig=sig: self._note("errors", sig, " | ".join(map(str, a))))
        self.pm._execution_complete_signal.connect(self._on_complete)
        self.tick_timer = QTimer(app)
        self.tick_timer.timeout.connect(self.tick)
        self.modal_timer = QTimer(app)  # separate: modal dialogs run nested event loops
        self.modal_timer.timeout.connect(self.handle_modals)

    def start(self) -> None:
        self.result["timings"]["gui_ready"] = round(time.monotonic() - T0, 2)
        say("GUI main window ready; driving")
        self.tick_timer.start(100)
        self.modal_timer.start(100)

    # -- observation ------------------------------------------------------------------
    def _note(self, key: str, label: str, message: str) -> None:
        if self.result[key] and self.result[key][-1] == message:
            return  # the plate manager repeats its idle "Ready" every second
        self.result[key].append(message)
        say(f"{label}: {message}")

    def _on_complete(self, completion, plate_path: str) -> None:
        self.completion = completion
        self.result.update(execution_id=completion.execution_id,
                           execution_status=completion.status.value,
                           completion_message=completion.message)
        say(f"GUI completion signal: plate={plate_path} execution_id={completion.execution_id} "
            f"status={completion.status.value} message={completion.message!r}")
        if completion.traceback_text:
            say("traceback:\n" + completion.traceback_text)

    def handle_modals(self) -> None:
        w = QApplication.activeModalWidget()
        if w is None:
            return
        if isinstance(w, QFileDialog) and self.want_dir_dialog:
            self.want_dir_dialog = False
            # As a user would: go into the plate directory and press Choose. (Directory
            # mode with nothing selected returns the current directory.)
            w.setDirectory(str(PLATE))
            if [Path(p).resolve() for p in w.selectedFiles()] != [PLATE]:
                w.setDirectory(str(PLATE.parent))
                w.selectFile(PLATE.name)
            say(f"directory dialog {w.windowTitle()!r}: selecting {w.selectedFiles()}")
            w.accept()
            return
        text = w.text() if isinstance(w, QMessageBox) else ""
        record = f"{type(w).__name__} {w.windowTitle()!r}: {text}"
        self._note("dialogs", "DIALOG (closed)", record)
        if isinstance(w, QMessageBox) and w.icon() in (QMessageBox.Icon.Critical,
                                                       QMessageBox.Icon.Warning):
            self.result["errors"].append(record)
        w.reject() if hasattr(w, "reject") else w.close()

    # -- the drive ----------------------------------------------------------------------
    def go(self, state: str) -> None:
        now = time.monotonic()
        self.result["timings"][self.state] = round(now - self.state_since, 2)
        say(f"-> {state} ({self.state} took {now - self.state_since:.2f}s)")
        self.state, self.state_since, self._clicked = state, now, False

    def click(self, action_id: str) -> None:
        button = self.pm.buttons[action_id]
        say(f"click {button.text()!r} ({action_id})")
        self._clicked = True
        QTimer.singleShot(0, button.click)

    def tick(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            if self._own_server_started():
                return
            if time.monotonic() > self.deadline:
                return self.finish(2, f"timed out in state {self.state}")
            if self.result["errors"] and self.state != "done":
                return self.finish(1, f"GUI reported an error: {self.result['errors'][-1]}")
            getattr(self, f"step_{self.state}")()
        except Exception as error:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            self.finish(1, f"driver error in {self.state}: {error!r}")
        finally:
            self._busy = False

    def _own_server_started(self) -> bool:
        """True (and finished) if any child of this process is an OpenHCS server."""
        import psutil
        if time.monotonic() - self._last_child_check < 1.0:
            return False
        self._last_child_check = time.monotonic()
        for child in psutil.Process().children(recursive=True):
            try:
                cmd = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if "zmq_execution_server_launcher" in cmd or "zmq_execution_server" in cmd:
                self.finish(4, f"the GUI started its own server: pid {child.pid}: {cmd}")
                return True
        return False

    def _client(self):
        return self.pm.zmq_client_service.zmq_client

    def step_connect(self) -> None:
        client = self._client()
        status = self.pm.execution_endpoint_status
        if client is None or not status.phase.accepts_requests:
            return
        pong = client.connected_endpoint
        pid = pong.process_identity.pid if pong and pong.process_identity else None
        owned = client.owned_server_process_is_alive()
        self.result.update(server_pid=pid, server_type=pong.server_type if pong else None,
                           client_owns_server=owned, endpoint_status=status.message)
        say(f"GUI attached: {status.message!r}; server_type={self.result['server_type']} "
            f"pid={pid}; client owns a server process: {owned}")
        if owned is not None:
            return self.finish(4, "the GUI's client owns (started) its server")
        if ARGS.expect_pid is not None and pid != ARGS.expect_pid:
            return self.finish(4, f"attached to pid {pid}, expected {ARGS.expect_pid}")
        self.go("add")

    def step_add(self) -> None:
        if not self._clicked:
            self.want_dir_dialog = True
            return self.click("add_plate")
        for row in self.pm.plates:
            if Path(str(row.scope_id)).resolve() == PLATE:
                self.scope = row.scope_id
            else:
                return self.finish(1, f"the dialog added another plate: {row.scope_id}")
        if self.scope is None:
            return
        if self.pm.selected_plate_path != self.scope or self.pe.current_plate != self.scope:
            return
        say(f"plate added and selected: {self.scope}")
        self.go("pipeline")

    def step_pipeline(self) -> None:
        if not self._clicked:
            self._clicked = True
            self.pipeline_code = example_pipeline_code()
            say(f"pipeline editor: applying code document ({len(self.pipeline_code)} chars)")
            self.pe.apply_code_document_source(self.pipeline_code)
        steps = self.pm.get_pipeline_definition(self.scope)
        if len(steps) == 3:
            say(f"plate pipeline: {[s.name for s in steps]}")
            self.go("init")

    def _orchestrator_state(self):
        from objectstate import ObjectStateRegistry
        orchestrator = ObjectStateRegistry.get_object(self.scope)
        return orchestrator.state if orchestrator is not None else None

    def step_init(self) -> None:
        if not self._clicked:
            if self.pm.buttons["init_plate"].isEnabled():
                self.click("init_plate")
            return
        state = self._orchestrator_state()
        if self.scope in self.pm.plate_init_pending:
            return
        name = getattr(state, "name", str(state))
        if "FAIL" in name:
            return self.finish(1, f"init failed: {state}")
        if name != "CREATED":
            say(f"orchestrator state: {name}")
            self.go("compile")

    def step_compile(self) -> None:
        button = self.pm.buttons["compile_plate"]
        if not self._clicked:
            if button.isEnabled() and button.text() == "Compile":
                self.click("compile_plate")
            return
        if self.scope in self.pm.plate_compile_pending:
            return
        if self.scope in self.pm.plate_compiled_data:
            say(f"compiled; orchestrator state: {self._orchestrator_state()}")
            self.go("run")
        elif "FAIL" in str(self._orchestrator_state()):
            self.finish(1, f"compile failed: {self._orchestrator_state()}")

    def step_run(self) -> None:
        if not self._clicked:
            if self.pm.buttons["run_plate"].isEnabled():
                self.click("run_plate")
            return
        if self.completion is not None:
            self.go("idle")

    def step_idle(self) -> None:
        from openhcs.core.execution_state import ManagerExecutionState
        if self.pm.execution_state is not ManagerExecutionState.IDLE:
            return
        self.result["orchestrator_state"] = str(self._orchestrator_state())
        self.result["run_button"] = self.pm.buttons["run_plate"].text()
        ok = self.result.get("execution_status") == "complete"
        self.finish(0 if ok else 1, f"run {self.result.get('execution_status')}")

    def step_done(self) -> None:
        pass

    def finish(self, code: int, why: str) -> None:
        if self.state == "done":
            return
        self.result["timings"][self.state] = round(time.monotonic() - self.state_since, 2)
        self.result["timings"]["total"] = round(time.monotonic() - T0, 2)
        self.result.update(exit_code=code, outcome=why, final_state=self.state)
        self.state = "done"
        self.exit_code = code
        say(f"{'OK' if code == 0 else 'FAIL'} ({code}): {why}")
        self.tick_timer.stop()
        self.modal_timer.stop()
        if ARGS.json:
            ARGS.json.write_text(json.dumps(self.result, indent=2, default=str))
        self.app.exit(code)


class Reporter(GuiStartupProgressReporterABC):
    """launch.main's startup-progress surface: ready() once the main window painted."""

    driver: Driver | None = None

    def ready(self) -> None:
        self.driver = Driver(QApplication.instance())
        self.driver.start()

    def fail(self, message: str, detail: str = "") -> None:
        say(f"FAIL: GUI startup failed: {message}\n{detail}")


reporter = Reporter()
args = argparse.Namespace(log_level="INFO", log_file=HOME / "gui.log", config=None,
                          no_gpu=True, restore_update_session=None)
say("starting OpenHCS GUI (openhcs.pyqt_gui.launch.main)")
rc = launch.main(arguments=args, startup_progress=reporter)
driver = reporter.driver
code = getattr(driver, "exit_code", None) if driver is not None else None
code = code if code is not None else (rc or 1)
if code == 0:
    import shutil
    shutil.rmtree(HOME, ignore_errors=True)  # a temporary HOME of ours: kept only on failure
    say("GUI exited; its temporary HOME removed")
else:
    say(f"GUI exited (launch.main returned {rc}); GUI log: {HOME / 'gui.log'}")
sys.exit(code)
