"""A first Run before the user's: once warm, the endpoint runs a tiny plate through itself.

OpenHCS's first compile and run in a process cost more than later ones: its storage
backends are imported on first use, and its compiler fills caches of type hints and
configuration state as it goes (measured on the example plate: the first Run of a
fresh endpoint 5.4 s, the next ones 3.6 s). An endpoint started with the session would
charge that to the user's first Run. The rehearsal pays it at start-up instead, by the
same path as the GUI: OpenHCS's own client, in this process, attaches to this endpoint,
compiles and runs a two-well plate from OpenHCS's synthetic generator with the first
steps of OpenHCS's own demo pipeline (normalise, channel composite, Z projection), in a
private temporary directory removed afterwards. Its lanes run on warmd's workers like
any run's, so their own first lane is rehearsed too.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

WELLS = ("A01", "A02")  # two lanes: num_workers=2


class RehearsalFailed(Exception):
    pass


def rehearse(config: Any, timeout: float = 300.0) -> float:
    """Compile and run the rehearsal plate through the endpoint that ``config`` names;
    the seconds it took. RehearsalFailed says why it did not complete."""
    from openhcs.runtime.zmq_execution_client import ZMQExecutionClient
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="warmd-openhcs-rehearsal-"))
    try:
        plate = _plate(root / "rehearsal")  # its runs show as "openhcs rehearsal ..."
        client = ZMQExecutionClient(config=config, persistent=True)
        if not client.connect_existing(timeout=min(timeout, 30.0)):
            raise RehearsalFailed("OpenHCS's client could not attach to this endpoint")
        try:
            compiled = _finished(client, client.submit_compile(_submission(plate)), "compile")
            _finished(client, client.submit_pipeline(_submission(plate, compiled)), "run")
        finally:
            client.disconnect()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return time.perf_counter() - start


def _finished(client: Any, accepted: dict, what: str) -> str:
    if accepted.get("status") != "accepted":
        raise RehearsalFailed(f"its {what} was not accepted: {accepted.get('message', accepted)}")
    execution_id = accepted["execution_id"]
    done = client.wait_for_completion(execution_id, poll_interval=0.05)
    if done.get("status") != "complete":
        raise RehearsalFailed(f"its {what} ended {done.get('status')}: {done.get('message', done)}")
    return execution_id


def _plate(path: Path) -> Path:
    from openhcs.demo.synthetic_data import SyntheticMicroscopyGenerator
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per tile
        SyntheticMicroscopyGenerator(
            output_dir=str(path), grid_size=(1, 1), tile_size=(64, 64), wavelengths=2,
            z_stack_levels=2, wells=list(WELLS), random_seed=1, num_cells=5).generate_dataset()
    return path


def _submission(plate: Path, compile_artifact_id: str | None = None) -> Any:
    from openhcs.core.config import GlobalPipelineConfig, PipelineConfig
    from openhcs.core.pipeline_document import PipelineDocumentAuthority
    from openhcs.runtime.zmq_execution_client import OpenHCSExecutionSubmission
    document = PipelineDocumentAuthority.from_values(pipeline_config=PipelineConfig(),
                                                     pipeline_steps=_steps())
    return OpenHCSExecutionSubmission(
        plate_id=str(plate), pipeline_document=document,
        global_config=GlobalPipelineConfig(num_workers=len(WELLS)),
        compile_artifact_id=compile_artifact_id)


def _steps() -> list:
    """Fresh steps each time (OpenHCS's compiler consumes the ones it compiles)."""
    from openhcs.constants.constants import VariableComponents
    from openhcs.core.config import LazyProcessingConfig
    from openhcs.core.steps.function_step import FunctionStep
    from openhcs.processing.backends.processors.numpy_processor import (
        create_composite, create_projection, stack_percentile_normalize)
    return [
        FunctionStep(func=(stack_percentile_normalize, {"low_percentile": 0.5,
                                                        "high_percentile": 99.5}),
                     name="normalize"),
        FunctionStep(func=create_composite, name="composite", processing_config=LazyProcessingConfig(
            variable_components=[VariableComponents.CHANNEL])),
        FunctionStep(func=create_projection, name="z-projection",
                     processing_config=LazyProcessingConfig(
                         variable_components=[VariableComponents.Z_INDEX])),
    ]
