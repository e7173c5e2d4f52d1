"""The warmd daemon: a supervisor that routes opaque jobs to warm workers."""
