"""The benchmark's copy of the plate job: examples/plate/pipeline.py plus a scikit-image step.

"Several wells, a few numpy/scipy/scikit-image filter steps per well": per well
the example's denoise, background, threshold, label and measure (scipy.ndimage),
then an Otsu threshold, labelling and region properties (scikit-image).
scikit-image lives in the benchmark's environment only.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples", "plate"))

import pipeline  # noqa: E402
import warmd  # noqa: E402

WELLS, SIZE = 8, 256


def analyse_well(img, xp, ndi) -> dict:
    from skimage import filters, measure
    out = pipeline.analyse_well(img, xp, ndi)
    smooth = ndi.gaussian_filter(img, 1.0)
    labels = measure.label(smooth > filters.threshold_otsu(smooth))
    props = measure.regionprops_table(labels, intensity_image=img,
                                      properties=("area", "eccentricity", "intensity_mean"))
    out["otsu_objects"] = int(labels.max())
    out["eccentricity"] = float(props["eccentricity"].mean()) if len(props["area"]) else 0.0
    return out


def run(wells: int = WELLS, size: int = SIZE, seed: int = 0) -> dict:
    """One plate run: the same steps whether called in-process, cold or on a warm worker."""
    began = time.perf_counter()
    xp, ndi = warmd.xp(), pipeline.ndimage()
    plate = xp.asarray(pipeline.synthetic_plate(wells, size, seed=seed))
    start = time.perf_counter()
    results = []
    for w in range(wells):
        results.append(analyse_well(plate[w], xp, ndi))
        warmd.progress(w + 1, wells, f"well {w + 1}")
    end = time.perf_counter()
    # "seconds": every step of the run, timed inside the process that ran it.
    return {"wells": results, "compute_seconds": end - start, "seconds": end - began}


def well(w: int, size: int = SIZE, seed: int = 0) -> int:
    """One well of a plate as a job of its own (the fan-out form): its nuclei."""
    xp, ndi = warmd.xp(), pipeline.ndimage()
    img = xp.asarray(pipeline.synthetic_plate(1, size, seed=seed + w)[0])
    return analyse_well(img, xp, ndi)["otsu_objects"]


def warm() -> None:
    """Warm-up hook: every step once on a tiny plate."""
    run(wells=1, size=64)


if __name__ == "__main__":
    run()
