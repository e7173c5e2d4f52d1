"""Fake cupyx.scipy."""
