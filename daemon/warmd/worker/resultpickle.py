"""How a call's result is pickled: GPU arrays come back as host (numpy) arrays.

Device memory cannot cross processes, and a cupy array pickled as itself would
only unpickle where cupy and a GPU are (never in a front end without one): so a
cupy ndarray anywhere in a result is copied to the host here and travels as the
numpy array ``.get()`` gives. A client that wants it on a device again calls
``cupy.asarray``. Arguments are left as they are: the worker has cupy.
"""
from __future__ import annotations

import functools
from typing import Any

from .. import oob


def dumps(result: Any, min_buffer: int = oob.MIN_BUFFER) -> oob.Pickled:
    """The result's pickle, its large buffers kept out of it in memfds (``warmd.oob``)."""
    return oob.dumps(_pickler(), result, min_buffer)


def is_device_array(obj: Any) -> bool:
    kind = type(obj)
    return kind.__name__ == "ndarray" and kind.__module__.split(".", 1)[0] == "cupy"


@functools.lru_cache(maxsize=1)
def _pickler() -> type:
    import cloudpickle

    class ResultPickler(oob.BufferReducer, cloudpickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if is_device_array(obj):
                return obj.get().__reduce_ex__(self.proto)  # device to host, then as numpy
            return super().reducer_override(obj)

    return ResultPickler
