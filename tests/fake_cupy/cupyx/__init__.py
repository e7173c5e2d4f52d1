"""Fake cupyx: only scipy.ndimage, wrapping SciPy's on the fake arrays' numpy data."""
