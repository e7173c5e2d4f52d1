"""warmd-openhcs.service under a real (private) systemd --user, with socket-activated warmd:
the units install-units --openhcs writes start, the service reports ready and warm, OpenHCS's
own client attaches and runs a plate, the endpoint's log is in the journal, and stop ends it
cleanly. Needs OpenHCS (make test runs this in bench/openhcs/.venv) and root."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.openhcs, pytest.mark.systemd, pytest.mark.slow, pytest.mark.timeout(900)]
pytest.importorskip("openhcs", reason="needs OpenHCS: 'make test' runs these in bench/openhcs/.venv")

import helpers_openhcs as oh  # noqa: E402
from systemd_env import PrivateSystemd, Unavailable, check_available, wait_until, warmctl  # noqa: E402

import sys  # noqa: E402
sys.path.insert(0, str(oh.EXAMPLE))
import pipeline  # noqa: E402

UNIT = "warmd-openhcs.service"


def test_the_endpoint_unit_serves_openhcs_on_socket_activated_warmd(tmp_path):
    try:
        check_available()
    except Unavailable as exc:
        pytest.skip(f"no private systemd --user: {exc}")
    root = Path(tempfile.mkdtemp(prefix="ohs-", dir="/tmp"))
    sd = PrivateSystemd(root)
    # OpenHCS's caches (its function catalog and registry) stay where this user has them.
    sd.env["XDG_DATA_HOME"] = os.environ.get("XDG_DATA_HOME", str(Path.home() / ".local/share"))
    port = oh.free_port()
    try:
        sd.start()
        config = sd.config / "warmd" / "warmd.toml"
        config.parent.mkdir(parents=True)
        config.write_text(oh.WARM_CONFIG.format(count=2))
        done = warmctl(sd.env, "install-units", "--openhcs", "--user-dir", str(sd.unit_dir))
        assert done.returncode == 0, done.stdout + done.stderr
        script = Path(os.path.abspath(sys.executable)).parent / "warmd-openhcs"
        dropin = sd.unit_dir / f"{UNIT}.d"
        dropin.mkdir()
        (dropin / "port.conf").write_text(  # a port of the test's own, not the GUI's 7777
            f"[Service]\nExecStart=\nExecStart={script} --no-autostart --port {port}\n")
        sd.systemctl("daemon-reload")
        sd.systemctl("enable", "--now", "warmd.socket")
        sd.systemctl("start", UNIT)  # Type=notify: returns once the endpoint is bound
        assert sd.show(UNIT, "ActiveState") == "active"

        client = oh.attach(port, lambda: sd.show(UNIT, "ActiveState") == "active")
        assert client.connected_endpoint.server == "WarmdExecutionServer"
        # STATUS= says when OpenHCS's catalog and warmd's workers are warm (no event to wait on)
        wait_until(lambda: sd.show(UNIT, "StatusText").startswith("warm:"), 600, "a warm endpoint")
        assert sd.show("warmd.service", "ActiveState") == "active"  # started by its socket

        plate = oh.fresh_plate(tmp_path / "plate", wells=2, grid=(1, 1), tile=64)
        done, _ = oh.run_plate(client, plate, pipeline.make_pipeline, num_workers=2)
        assert done["status"] == "complete" and len(oh.output_files(plate)) >= 3
        client.disconnect()
        jobs = warmctl(sd.env, "--socket", str(sd.runtime / "warmd.sock"), "jobs")
        assert "openhcs plate" in jobs.stdout and "plate worker_0 (A01)" in jobs.stdout

        sd.systemctl("stop", UNIT)
        assert sd.show(UNIT, "ActiveState") == "inactive" and sd.show(UNIT, "Result") == "success"
        sd.sync_journal()
        journal = sd.journalctl("--user-unit", UNIT).stdout
        assert "serving OpenHCS 0.8.6 on ipc://" in journal and "stopped" in journal
        assert sd.show("warmd.service", "ActiveState") == "active"  # warmd's workers stay
    finally:
        sd.stop()
        shutil.rmtree(root, ignore_errors=True)
