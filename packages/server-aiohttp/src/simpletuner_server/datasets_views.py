"""``/api/datasets``: dataset folders and uploads under ``settings.datasets_dir`` (work in progress)."""

from __future__ import annotations

from simpletuner_server.routes_types import Route

DATASET_ROUTES: tuple[Route, ...] = ()
