"""Arrows that must never exist (DESIGN §6), checked in fresh interpreters and in the source."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def imported_modules(package_dir: Path) -> set[str]:
    names: set[str] = set()
    for path in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return names


def top_level(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_minimal_core_and_server_import_without_torch() -> None:
    code = ("import sys, simpletuner_core, simpletuner_server\n"
            "from simpletuner_core.plugins import get_registry\n"
            "from simpletuner_server import create_app\n"
            "from simpletuner_server.settings import ServerSettings\n"
            "get_registry(); create_app(ServerSettings())\n"
            "import simpletuner_core.config, simpletuner_core.data.preflight, simpletuner_core.events\n"
            "sys.exit('torch imported' if 'torch' in sys.modules else 0)")
    out = fresh(code)
    assert out.returncode == 0, out.stderr


def test_minimal_cli_non_training_commands_do_not_import_torch() -> None:
    code = ("import sys, io, contextlib\nfrom simpletuner_core.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['plugins']); main(['models', 'list'])\n"
            "sys.exit('torch imported' if 'torch' in sys.modules else 0)")
    out = fresh(code)
    assert out.returncode == 0, out.stderr


def test_core_never_imports_plugins_server_or_webhooks() -> None:
    used = top_level(imported_modules(ROOT / "packages/core/src"))
    assert not used & {"simpletuner_pixart", "simpletuner_flux", "simpletuner_server", "simpletuner_webhooks",
                       "simpletuner_ray", "ray"}


def test_server_without_a_ray_address_never_imports_ray(tmp_path: Path) -> None:
    """Not even with SIMPLETUNER_RAY_ADDRESS inherited (as trainers and CLI processes do): only the server
    command, told to use Ray, turns the executor on in its own process."""
    code = ("import sys\nfrom pathlib import Path\nfrom simpletuner_core.jobs.runner import Runner\n"
            "from simpletuner_core.jobs.store import open_store\n"
            "from simpletuner_server import create_app\nfrom simpletuner_server.settings import ServerSettings\n"
            f"home = Path({str(tmp_path)!r})\ncreate_app(ServerSettings(home=home))\n"
            "runner = Runner(open_store(home), home, devices=[])\nnames = list(runner.executors)\n"
            "runner.kick()\n"
            "sys.exit(f'ray imported: {names}' if 'ray' in sys.modules or 'ray' in names else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         env={**os.environ, "SIMPLETUNER_RAY_ADDRESS": "auto"})
    assert out.returncode == 0, out.stderr or out.stdout


#: Torch-free modules under simpletuner_core.training that the server may use (checked below).
TORCH_FREE_TRAINING = {"simpletuner_core.training.checkpoint"}


def test_server_and_webhooks_never_import_torch_modules() -> None:
    for package in ("server-aiohttp", "webhooks"):
        used = imported_modules(ROOT / "packages" / package / "src")
        training = {n for n in used if n.startswith("simpletuner_core.training")}
        assert not training - TORCH_FREE_TRAINING, package
        assert not top_level(used) & {"torch", "diffusers", "transformers", "accelerate", "peft"}, package


def test_model_packages_do_not_import_each_other() -> None:
    assert "simpletuner_flux" not in top_level(imported_modules(ROOT / "packages/model-pixart/src"))
    assert "simpletuner_pixart" not in top_level(imported_modules(ROOT / "packages/model-flux/src"))


@pytest.mark.parametrize("module", ["simpletuner_pixart.plugin", "simpletuner_flux.plugin",
                                    "simpletuner_webhooks.plugin", "simpletuner_server.plugin",
                                    "simpletuner_ray.plugin"])
def test_plugin_entry_modules_are_light(module: str) -> None:
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"{module} not installed in this session")
    out = fresh(f"import sys, {module}; sys.exit('heavy: ' + ','.join(m for m in ('torch', 'diffusers', "
                f"'transformers', 'ray') if m in sys.modules) if 'torch' in sys.modules or 'ray' in sys.modules "
                "else 0)")
    assert out.returncode == 0, out.stderr or out.stdout


def test_minimal_hooks_publishing_and_plot_helpers_are_torch_free() -> None:
    """The server serves the loss plot and reads hook results; none of that may pull in torch (or Pillow)."""
    code = ("import sys, simpletuner_core.plot, simpletuner_core.hooks.job, simpletuner_core.hooks.scripts, "
            "simpletuner_core.builtins.publishers, simpletuner_core.builtins.validation\n"
            "heavy = [m for m in ('torch', 'PIL', 'huggingface_hub') if m in sys.modules]\n"
            "sys.exit(f'imported {heavy}' if heavy else 0)")
    out = fresh(code)
    assert out.returncode == 0, out.stderr


def test_minimal_torch_free_training_helpers_stay_torch_free() -> None:
    imports = "; ".join(f"import {name}" for name in sorted(TORCH_FREE_TRAINING))
    out = fresh(f"import sys; {imports}; sys.exit('torch imported' if 'torch' in sys.modules else 0)")
    assert out.returncode == 0, out.stderr


def test_worker_agent_does_not_import_torch() -> None:
    """The agent only talks HTTP and spawns trainers; torch belongs to the trainer processes."""
    code = ("import sys, argparse, tempfile, pathlib\n"
            "from simpletuner_core.agent import command\n"
            "from simpletuner_core.agent.agent import Agent\n"
            "from simpletuner_core.agent.client import Orchestrator\n"
            "from simpletuner_core.agent.capabilities import capabilities\n"
            "p = argparse.ArgumentParser(); command.add_arguments(p); p.parse_args([])\n"
            "capabilities(); Agent(Orchestrator('http://127.0.0.1:9', 'wt_x'), pathlib.Path(tempfile.mkdtemp()))\n"
            "sys.exit('torch imported' if 'torch' in sys.modules else 0)")
    out = fresh(code)
    assert out.returncode == 0, out.stderr
