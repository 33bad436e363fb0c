"""The ``simpletuner`` command line (``python -m simpletuner_core.cli`` works too)."""


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""
