"""Sessions: tests (everything), server_minimal (no torch), lint, demo, bench.

Every session installs through ``install()`` with ``constraints-cpu.txt``: torch is pinned to the CPU build, so a
CPU machine never downloads a CUDA torch. Virtualenvs are reused when present (re-runs are fast and idempotent).
"""

from __future__ import annotations

import nox

nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "server_minimal", "tests"]

PACKAGES = ["packages/core", "packages/model-pixart", "packages/model-flux", "packages/server-aiohttp",
            "packages/webhooks", "packages/executor-ray"]


def install(session: nox.Session, *targets: str) -> None:
    session.install("--upgrade", "pip")
    session.install("-c", "constraints-cpu.txt", "torch==2.13.0")
    session.install("-c", "constraints-cpu.txt", *[arg for t in targets for arg in ("-e", t)])


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The whole suite: every package plus the cross-package tests (CPU; GPU tests skip without CUDA)."""
    extras = {"packages/server-aiohttp": "packages/server-aiohttp[test]"}  # schemathesis
    install(session, "packages/core[train,test,tensorboard]", *[extras.get(p, p) for p in PACKAGES[1:]])
    session.env["SIMPLETUNER_PROGRESS"] = "0"
    session.run("python", "-m", "pytest", "-n", "2", "--dist", "loadfile", *session.posargs)


@nox.session(python="3.11")
def server_minimal(session: nox.Session) -> None:
    """Core + server without torch: importing and starting them must not import torch."""
    session.install("--upgrade", "pip")
    session.install("-e", "packages/core[test]", "-e", "packages/server-aiohttp")
    session.run("python", "-c", "import importlib.util, sys; "
                "sys.exit('torch is installed in server_minimal' if importlib.util.find_spec('torch') else 0)")
    session.run("python", "-m", "pytest", "-q", "tests/test_layering.py", "-k", "minimal", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Install, then run the tutorial's API walkthrough against a real server: tiny PixArt on CPU (./demo-home)."""
    install(session, *[p for p in PACKAGES if p != "packages/executor-ray"])  # no cluster in the demo
    session.run("simpletuner", "api-demo", "--home", "demo-home", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Engine vs hand-written loop, side by side in one run."""
    install(session, *PACKAGES)
    session.run("python", "bench/train_loop.py", *session.posargs)
