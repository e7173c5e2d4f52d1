"""warmctl's exit statuses (documented in warmctl(1)).

For ``exec``, ``run``, ``attach`` and ``wait`` the job's own exit status comes
first: 0, or n from ``sys.exit(n)``, or 1 for an exception.
"""
OK = 0
JOB_FAILED = 1
USAGE = 2            # argparse's own
NO_SUCH_JOB = 66     # EX_NOINPUT: unknown or expired job id
UNAVAILABLE = 69     # EX_UNAVAILABLE: no daemon answers and none could be started
SOFTWARE = 70        # EX_SOFTWARE: the daemon refused the request
PROTOCOL = 76        # EX_PROTOCOL: client and daemon versions do not match
CONFIG = 78          # EX_CONFIG: the daemon it had to start has an invalid configuration
JOB_LOST = 125       # the worker running the job died
JOB_CANCELLED = 130  # the job was cancelled (as a shell reports Ctrl-C)
INTERRUPTED = 130    # Ctrl-C stopped warmctl following a job, which goes on


def of_job(end) -> int:  # type: ignore[no-untyped-def]
    """The status warmctl exits with for a job's end (a ``Finished``)."""
    if end.state == "cancelled":
        return JOB_CANCELLED
    if end.state == "lost":
        return JOB_LOST
    return end.exit_status
