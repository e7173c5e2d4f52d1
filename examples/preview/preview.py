"""A preview loop through a warmd session: load an image once, then smooth it with one
setting after another on the same warm worker, as a front end's slider would.

    python examples/preview/preview.py

It starts its own daemon in a private directory (so it never touches yours) and
stops it at the end.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

_image: dict[str, np.ndarray] = {}   # kept in the worker between a session's calls


def load(seed: int = 0, size: int = 512) -> int:
    """Make (as a reader would load) an image and keep it in this module."""
    _image["img"] = np.random.default_rng(seed).random((size, size), dtype=np.float32)
    return os.getpid()


def smooth(sigma: float) -> dict:
    """Smooth the loaded image by a box filter of width ~sigma; a small summary back."""
    img = _image["img"]
    width = max(1, int(round(2 * sigma)) | 1)
    kernel = np.ones(width, dtype=np.float32) / width
    out = np.apply_along_axis(np.convolve, 1, img, kernel, mode="same")
    return {"sigma": sigma, "mean": round(float(out.mean()), 4), "std": round(float(out.std()), 4)}


def main() -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import warmd
    import preview  # this file as a module: its functions travel by reference

    with tempfile.TemporaryDirectory(prefix="warmd-preview-") as home:
        sock = os.path.join(home, "warmd.sock")
        with warmd.Client(sock) as client:  # starts a daemon there
            with client.session(name="preview") as session:
                pid = session.submit(preview.load, 0).result()
                print(f"image loaded once, in worker pid {pid}")
                for sigma in (0.5, 1.0, 2.0, 4.0):
                    start = time.perf_counter()
                    summary = session.submit(preview.smooth, sigma).result()
                    print(f"{summary}  {1e3 * (time.perf_counter() - start):.1f} ms")
            client.shutdown_daemon()
    return 0


if __name__ == "__main__":
    sys.exit(main())
