"""``GET /api/configs/fields``: every config key with its type, default, choices and help, placed on
SimpleTuner's UI tabs and sections, so a config editor can lay itself out from the API alone.

The placement comes from SimpleTuner's own key table shipped with core (``config/simpletuner_keys.tsv``); our
keys it lacks go to the ``model`` tab (family plugin keys) or to ``advanced``. Torch-free: it reads core's field
metadata and the plugin registry, never a model.
"""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Any

from aiohttp import web

from simpletuner_core.config import compat
from simpletuner_core.config.model import field_docs
from simpletuner_core.plugins import get_registry
from simpletuner_server.api_spec import accepts
from simpletuner_server.auth import require

#: SimpleTuner's tab order; tabs it does not have follow, by name.
TAB_ORDER = ("basic", "model", "training", "validation", "publishing", "hardware", "advanced")
PLUGIN_PLACE = ("model", "model_specific")  # where SimpleTuner puts model-family keys
OTHER_PLACE = ("advanced", "other")


def _jsonable(value: Any) -> Any:
    """Defaults and choices as JSON: non-finite floats and foreign objects become strings, tuples lists."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return str(value)


def field_table(registry: Any) -> list[dict[str, Any]]:
    """One entry per config field of ``registry``'s config model, in the model's order."""
    peers = compat.peer_keys()
    families = {field.name: field.family for field in registry.config_fields.values()}
    out = []
    for doc in field_docs(registry):
        name = doc["name"]
        peer = peers.get(name)
        family = families.get(name)
        if peer is not None and peer.tab:
            tab, section = peer.tab, peer.section or OTHER_PLACE[1]
        else:
            tab, section = PLUGIN_PLACE if family else OTHER_PLACE
        out.append({"key": f"--{name}", "name": name, "type": doc["type"], "default": _jsonable(doc["default"]),
                    "choices": _jsonable(doc["choices"]), "help": doc["help"], "tab": tab, "section": section,
                    "family": family, "simpletuner": peer is not None})
    return out


def ordered_tabs(fields: list[dict[str, Any]]) -> list[str]:
    present = {field["tab"] for field in fields}
    return [tab for tab in TAB_ORDER if tab in present] + sorted(present - set(TAB_ORDER))


@accepts(tag="configurations")
@require("config.view")
async def config_fields(request: web.Request) -> web.Response:
    """Every config key with type, default, choices, help and its SimpleTuner UI tab and section.

    ``family`` names the model family a plugin key belongs to (null: any family); ``simpletuner`` tells whether
    SimpleTuner has the key too. ``tabs`` lists the tabs in display order.
    """
    body = await asyncio.get_running_loop().run_in_executor(None, lambda: _body(get_registry()))
    return web.json_response(body)


@functools.lru_cache(maxsize=2)
def _body(registry: Any) -> dict[str, Any]:
    """Built once per registry (fields never change while a server runs), off the event loop: the first call
    imports the plugins' config fields."""
    fields = field_table(registry)
    return {"fields": fields, "tabs": ordered_tabs(fields), "count": len(fields)}
