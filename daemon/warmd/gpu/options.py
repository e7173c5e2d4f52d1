"""The GPU settings a worker receives, checked once at start-up against the devices found.

warmd.toml's parser checks each value's form (a fraction in (0, 1], a size, a
policy name); what only makes sense next to a real device (a byte limit larger
than the card, a limit too small to be meant) is checked here, in the daemon,
so a bad value stops the daemon with a message naming the key instead of
failing every worker's warm-up later.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..errors import ConfigError

# Below this a pool limit cannot hold a useful job: a value such as 1 was meant as "all of it".
MIN_MEMORY_LIMIT = 16 * 1024**2


def check(options: dict[str, Any], devices: Sequence[Any]) -> None:
    """Raise ConfigError naming the key when a GPU setting cannot work on ``devices``."""
    limit = options.get("gpu_memory_limit", 0)
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < MIN_MEMORY_LIMIT:
        raise ConfigError(
            f"workers.gpu_memory_limit: {limit} bytes is too small for any job; give a fraction "
            'of the device\'s memory such as 0.8 (1.0 = all of it) or a size such as "20GiB"')
    if isinstance(limit, int) and limit:
        for device in devices:
            if device.memory and limit > device.memory:
                raise ConfigError(
                    f"workers.gpu_memory_limit: {limit} bytes is more than GPU{device.index} "
                    f"({device.name or 'unnamed'}) has ({device.memory} bytes); give a smaller "
                    "size or a fraction such as 0.8")
