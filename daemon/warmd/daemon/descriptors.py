"""The daemon's descriptor budget: what a client's arrays may take of RLIMIT_NOFILE.

Each array a client passes as a memfd holds one descriptor in the daemon until its job
has run, and a queue of thousands of small arrays can reach the limit. Past it the
daemon could neither accept a client nor receive a frame's descriptors, and the kernel
would truncate them silently. So it keeps a reserve: a frame's worth of descriptors
(SCM_MAX_FD, 253) and its own files, sockets and workers, and refuses, with an error
that says what to change, a submit whose buffers would reach into it. Descriptors are
numbered lowest-free-first, so the highest one a frame brought measures how many are
open, at no cost.
"""
from __future__ import annotations

import resource
from typing import Sequence

RESERVE_MIN = 320  # a frame's 253 descriptors, and the daemon's own files with room


def limit() -> int:
    """The most descriptors this process may have: its hard limit (``memfd.make_room``
    raises the soft one to it as needed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return 1 << 20
    return max(soft, hard)


def refusal(files: Sequence) -> str | None:
    """Why a frame's descriptors may not be kept, or None when they fit the budget."""
    if not files:
        return None
    cap = limit()
    reserve = max(RESERVE_MIN, cap // 8)
    highest = max(f.fd for f in files)
    if highest < cap - reserve:
        return None
    return (f"the daemon holds about {highest} open descriptors of its limit of {cap} "
            f"(RLIMIT_NOFILE) and keeps {reserve} for accepting and answering clients, so this "
            f"submit's {len(files)} array buffer(s) were refused. Let queued jobs finish first, "
            "pass fewer and larger arrays (arrays under buffers.min_bytes travel inside the "
            "pickle instead), or raise the limit (LimitNOFILE= in warmd.service)")
