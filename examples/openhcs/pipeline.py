"""The example's OpenHCS pipeline and synthetic plate.

``make_pipeline()`` returns fresh ``FunctionStep`` objects on every call: OpenHCS's
compiler consumes the steps it compiles (a second compile of the same objects fails
with ``'FunctionStep' object has no attribute '_scope_token'``), so a warm worker
builds the steps again for every run, as OpenHCS's execution server does when it
executes the pipeline's source for each request.

The three steps are the first three of OpenHCS's own synthetic-plate demo
(openhcs/demo/synthetic_plate_pipeline.py): per site, normalise each image, make a
channel composite, then a maximum projection over Z. On a plate of W wells x S
sites that is W*S output images in ``<plate>_openhcs/images``.
"""
from __future__ import annotations

from pathlib import Path

STEP_NAMES = ("normalize", "composite", "z-projection")


def make_pipeline() -> list:
    from openhcs.constants.constants import VariableComponents
    from openhcs.core.config import LazyProcessingConfig
    from openhcs.core.steps.function_step import FunctionStep
    from openhcs.processing.backends.processors.numpy_processor import (
        create_composite, create_projection, stack_percentile_normalize)
    return [
        FunctionStep(func=(stack_percentile_normalize, {"low_percentile": 0.5, "high_percentile": 99.5}),
                     name=STEP_NAMES[0]),
        FunctionStep(func=create_composite, name=STEP_NAMES[1],
                     processing_config=LazyProcessingConfig(variable_components=[VariableComponents.CHANNEL])),
        FunctionStep(func=create_projection, name=STEP_NAMES[2],
                     processing_config=LazyProcessingConfig(variable_components=[VariableComponents.Z_INDEX])),
    ]


def pipeline_config():
    """The plate's ``PipelineConfig``: all defaults (lazy, resolved against the global one)."""
    from openhcs.core.config import PipelineConfig
    return PipelineConfig()


def make_plate(root: str | Path, wells: int = 4, grid: tuple[int, int] = (2, 2), channels: int = 2,
               z: int = 2, tile: int = 256, cells: int = 50, seed: int = 42) -> Path:
    """An ImageXpress-style synthetic plate from OpenHCS's own generator
    (openhcs/demo/synthetic_data.py:43): ``wells`` wells of ``grid`` sites, ``channels``
    wavelengths, ``z`` planes. Reproducible for a given seed."""
    import contextlib
    import io
    from openhcs.demo.synthetic_data import SyntheticMicroscopyGenerator
    root = Path(root)
    names = [f"{row}{col:02d}" for row in "ABCDEFGH" for col in range(1, 13)][:wells]
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per tile
        generator = SyntheticMicroscopyGenerator(
            output_dir=str(root), grid_size=grid, tile_size=(tile, tile), wavelengths=channels,
            z_stack_levels=z, wells=names, random_seed=seed, num_cells=cells)
        generator.generate_dataset()
    return root
