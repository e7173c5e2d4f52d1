"""warmd for OpenHCS: an execution endpoint its own front ends attach to.

``warmd-openhcs`` runs OpenHCS's own ZMQ execution server (a subclass of its
``ZMQExecutionServer``, from the installed OpenHCS, so the handshake holds) on
the endpoint OpenHCS's GUI is configured for. Plates compile in the endpoint,
whose OpenHCS registry stays warm; each run's worker lanes go to warmd's warm
workers as one job group instead of a process pool started for the run; Stop
cancels that run's group alone; workers stay warm for the next Run.

OpenHCS is never a dependency of warmd: ``pip install 'warmd[openhcs]'`` in the
OpenHCS environment. Nothing here imports OpenHCS at import time; ``compat``
says which OpenHCS this was written for.

Modules, by the process they run in:

- the endpoint: ``main`` (the command), ``endpoint`` (owning the address before
  anyone can look), ``server`` (the server class), ``executor`` (the one seam in
  OpenHCS: its worker-lane executor, replaced by warmd job groups),
  ``freshness`` (edited user modules are read again);
- warmd's workers: ``warmup`` (the warm-up hook), ``lanes`` (the job that runs
  one lane of wells), ``caches`` (what OpenHCS caches about functions);
- both: ``compat``.
"""
