"""``warmctl``: the command-line client."""
