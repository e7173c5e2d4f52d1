"""GPU support. Importing this package never imports cupy or touches CUDA.

- ``inventory``: the daemon learns the devices from a short-lived probe process
  (only when cupy is installed and workers.devices is not "none").
- ``options``: the GPU settings, checked against those devices at start-up.
- ``worker``: imported only in a worker pinned to a device: cupy warm-up, and
  memory hygiene after every job (``memory``: the per-job pool peak;
  ``errors``: which job errors come from CUDA).

From a client, a job asks for a device with ``Client.submit_call(fn, args,
kwargs, device=1)``, ``run_code(..., device=1)``, ``run_script(...,
device=1)`` or ``warmctl exec|run|submit --device 1``; ``Client(device=1)``
makes it the default of every job of that client, ``submit`` included
(``submit(fn, *args, **kwargs)`` passes every keyword to ``fn``, so it has no
``device`` of its own). Without a device a job takes any free worker. Inside a
job, ``warmd.device()`` is the index of the worker's device (None in CPU mode)
and ``warmd.xp()`` the array module to use: cupy on a GPU worker, numpy
otherwise. A job's ``done`` record (``future.finished.info["gpu"]``, ``warmctl
wait --json``) carries its device, its peak pool use and what the worker did
with the pool afterwards.
"""
