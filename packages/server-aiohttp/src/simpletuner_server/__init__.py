"""simpletuner-server: the aiohttp HTTP front end for simpletuner-core (no torch needed).

``create_app`` is exported lazily so that loading the ``server`` plugin (which only registers the CLI
command) does not import aiohttp; listing plugins stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "create_app"]

if TYPE_CHECKING:
    from simpletuner_server.app import create_app


def __getattr__(name: str) -> Any:
    """Import the aiohttp application module only when ``create_app`` is actually asked for."""
    if name == "create_app":
        from simpletuner_server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
