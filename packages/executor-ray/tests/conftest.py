"""One two-node local Ray cluster per test module (a head labelled team=vision, a node labelled team=nlp-east)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: every node on 127.0.0.1

from simpletuner_core.jobs import executors as ex
from simpletuner_core.jobs.runner import Runner
from simpletuner_core.jobs.store import SQLiteStore, open_store


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Custom resources ``vision`` / ``nlp`` mark the nodes too; nodes bind to loopback only."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "labels": {"team": "vision"},
                                                      "resources": {"vision": 1}, "include_dashboard": False})
    c.add_node(num_cpus=2, labels={"team": "nlp-east"}, resources={"nlp": 1})
    c.wait_for_nodes()
    ray.init(address=c.address, namespace="simpletuner", log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture
def ray_runner(cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Runner, SQLiteStore]]:
    """A runner of this process with the Ray executor enabled, its node homes under ``tmp_path``."""
    monkeypatch.setenv("SIMPLETUNER_HOME", str(tmp_path))
    ex.enable("ray", address=cluster.address, node_home=str(tmp_path / "nodes"))
    store = open_store(tmp_path)
    try:
        yield Runner(store, tmp_path, devices=[]), store
    finally:
        ex.disable("ray")
