"""simpletuner-core: plugin host, config model, data pipeline, training engine and CLI.

Importing this package never imports torch; training modules import it lazily.
"""

from simpletuner_core.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
