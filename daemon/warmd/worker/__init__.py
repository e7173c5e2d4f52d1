"""The worker: a warm interpreter that runs one job at a time for the daemon."""
