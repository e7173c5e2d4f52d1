"""Clients of the daemon: one sans-I/O core driven by a threaded and an asyncio wrapper."""
