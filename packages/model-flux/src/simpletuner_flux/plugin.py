"""Flux / Flux Kontext family plugin.

Registered through the ``simpletuner`` entry-point group so installation and discovery are exercised today; it
contributes no model family yet. Flux dev, schnell, krea and Kontext flavours (flow matching, packed latents,
reference latents) arrive with their own issue; until then ``model_family: flux`` is rejected by the config rules
as an unknown family, listing the families that are installed.
"""

from __future__ import annotations

PLUGIN_STATUS = "registered; no flavours yet"
