"""Flux fixtures: tiny Flux and Kontext pipelines and one edit/reference set per test session (per xdist worker)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simpletuner_flux.tiny import ensure_tiny_pipeline

    return ensure_tiny_pipeline(tmp_path_factory.mktemp("flux-models"))


@pytest.fixture(scope="session")
def tiny_kontext_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simpletuner_flux.tiny import ensure_tiny_pipeline

    return ensure_tiny_pipeline(tmp_path_factory.mktemp("kontext-models"), kontext=True)


@pytest.fixture(scope="session")
def demo_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/edit`` (targets + instructions) and ``<root>/reference`` with matching file names."""
    from simpletuner_core.demo_data import write_demo_pairs

    root = tmp_path_factory.mktemp("pairs")
    write_demo_pairs(root / "edit", root / "reference", count=8, size=64)
    return root
