"""What OpenHCS keeps per process about the functions it runs, and forgetting it.

A warm process must neither run nor keep an old version of a user module's step
functions after the module was edited. OpenHCS 0.8.6 caches them in four places
(paths under site-packages/openhcs/):

- ``RegistryService._resolved_reference_callables`` (processing/backends/
  lib_registry/registry_service.py:343-417): a user's ``@numpy`` step function
  compiles to a registry reference named by module and function, resolved to a
  callable once per process. Without dropping it a warm process runs the old
  function. Only the changed modules' entries go: the registry itself (thousands
  of library functions) takes seconds to build.
- the process-local cache families (core/process_local_cache.py:144): callables
  bound to compiled contracts, keyed by identity, which keep old functions alive;
- the prepared-callable keys (core/callable_contract.py:1696), keyed by module
  *name*, so a changed module's preparation would not run again;
- two ``lru_cache``s keyed by function object (core/pipeline/
  function_contracts.py:46, core/runtime_batch_contracts.py:51).
"""
from __future__ import annotations

from collections.abc import Iterable


def clear_function_caches(names: Iterable[str] = ()) -> dict[str, int]:
    """Drop what this process caches about callables (and, of the registry's resolved
    references, those of the modules ``names``). Returns how many entries each held."""
    names = frozenset(names)
    held: dict[str, int] = {}
    from openhcs.core import process_local_cache as plc
    families = [*plc.RegisteredProcessLocalBoundedCache.__registry__.values(),
                *plc.IdentityBoundProcessCache.__registry__.values()]
    held["process_local"] = sum(len(c._process_cache.entries) for c in families
                                if c._process_cache is not None)
    plc.clear_registered_process_local_caches()

    from openhcs.core import callable_contract
    held["prepared_callables"] = len(callable_contract._prepared_callable_keys)
    callable_contract.reset_processing_callable_preparation_cache()

    from openhcs.core.pipeline.function_contracts import resolved_callable_type_hints
    from openhcs.core.runtime_batch_contracts import runtime_callable_defaults
    for cached in (resolved_callable_type_hints, runtime_callable_defaults):
        held[cached.__name__] = cached.cache_info().currsize
        cached.cache_clear()

    from openhcs.processing.backends.lib_registry.registry_service import RegistryService
    resolved = RegistryService._resolved_reference_callables
    with RegistryService._registry_inventory_lock:
        stale = [key for key, entry in resolved.items()
                 if getattr(entry.func, "__module__", None) in names]
        for key in stale:
            del resolved[key]
    held["registry_references"] = len(stale)
    return held
