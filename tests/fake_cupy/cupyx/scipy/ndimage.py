"""Fake cupyx.scipy.ndimage: SciPy's functions on the fake arrays' data, results as fake arrays."""
from __future__ import annotations

import numpy as _np
import scipy.ndimage as _ndi

import cupy as _cupy


def __getattr__(name: str):
    fn = getattr(_ndi, name)

    def wrapped(*args, **kwargs):
        args = [a._host if isinstance(a, _cupy.ndarray) else a for a in args]
        out = fn(*args, **kwargs)
        if isinstance(out, tuple):
            return tuple(_cupy.ndarray(_np.asarray(o)) if isinstance(o, _np.ndarray) else o for o in out)
        return _cupy.ndarray(_np.asarray(out)) if isinstance(out, _np.ndarray) else out

    return wrapped
