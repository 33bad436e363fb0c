"""Core's CLI commands: train, demo, demo-data, plugins, models, config."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import CliCommand


def home_from_args(args: argparse.Namespace) -> Path:
    from simpletuner_core import paths

    return Path(args.home).expanduser().resolve() if getattr(args, "home", None) else paths.home()


def _add_home(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="state directory (default: $SIMPLETUNER_HOME or ~/.simpletuner)")


def _load_raw(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from simpletuner_core.cli import UsageError
    from simpletuner_core.config.environments import EnvironmentError_, load_environment

    if bool(args.env) == bool(args.config):
        raise UsageError("give exactly one of --env NAME and --config FILE.json")
    if args.env:
        try:
            return dict(load_environment(args.env, home)["config"])
        except (EnvironmentError_, ValueError) as exc:
            raise UsageError(str(exc)) from None
    path = Path(args.config).expanduser()
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path} must hold a JSON object of --key: value pairs")
    for key in ("--data_backend_config", "data_backend_config"):
        value = raw.get(key)
        if isinstance(value, str) and not Path(value).is_absolute() and (path.parent / value).exists():
            raw[key] = str((path.parent / value).resolve())
    return raw


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    from simpletuner_core.cli import UsageError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set expects key=value, got {pair!r}")
        out[key.lstrip("-")] = value
    return out


def _validated(args: argparse.Namespace, home: Path) -> Any:
    from simpletuner_core.cli import UsageError
    from simpletuner_core.config import ConfigInvalid, validate, warnings_for
    from simpletuner_core.config.migrations import overlay
    from simpletuner_core.config.model import strip_dashes

    raw = overlay(strip_dashes(_load_raw(args, home)), parse_overrides(getattr(args, "set", []) or []))
    try:
        cfg = validate(raw)
    except ConfigInvalid as exc:
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        raise UsageError(f"invalid configuration ({len(exc.errors)} error(s))") from None
    for note in warnings_for(cfg, raw):
        print(f"  warning: {note}", file=sys.stderr)
    return cfg


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", help="environment name under $SIMPLETUNER_HOME/config/")
    p.add_argument("--config", help="a config JSON file in the --key wire format")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config key (repeatable)")
    _add_home(p)


def _train(args: argparse.Namespace) -> int:
    from simpletuner_core.cli.jobs_local import run_job
    from simpletuner_core.plugins import get_registry

    home = home_from_args(args)
    cfg = _validated(args, home)
    code, result = run_job(cfg, home, get_registry())
    if result is not None:
        print(f"{result.status} at step {result.global_step}; output in {result.output_dir}")
    return code


def _config(args: argparse.Namespace) -> int:
    if args.action == "reference":
        from simpletuner_core.config.reference import render_markdown

        print(render_markdown(), end="")
        return 0
    if args.action == "compat":
        from simpletuner_core.config.reference import render_compat_markdown

        print(render_compat_markdown(), end="")
        return 0
    if args.action == "show":
        return _config_show(args)
    if args.action == "plan":
        return _config_plan(args)
    return _config_validate(args)


def _memory_warning(cfg: Any, home: Path, plan: Any = None) -> str | None:
    """validate's warning when the memory plan exceeds the visible GPUs (None without GPUs or a plan)."""
    from simpletuner_core.jobs.devices import discover
    from simpletuner_core.memory import NoPlan, fit_warning, plan_for
    from simpletuner_core.plugins import get_registry

    devices = discover()[0]
    if not devices:
        return None
    try:
        plan = plan or plan_for(cfg, get_registry(), home)
    except NoPlan:
        return None
    return fit_warning(plan, devices, cfg, get_registry(), home)


def _config_plan(args: argparse.Namespace) -> int:
    from simpletuner_core.cli import UsageError
    from simpletuner_core.memory import NoPlan, knobs, plan_for
    from simpletuner_core.memory.plan import GiB
    from simpletuner_core.plugins import get_registry

    home = home_from_args(args)
    cfg = _validated(args, home)
    try:
        plan = plan_for(cfg, get_registry(), home, device=args.device)
    except NoPlan as exc:
        raise UsageError(str(exc)) from None
    budget = int(args.budget_gb * GiB) if args.budget_gb else None
    helps = knobs(cfg, get_registry(), home, budget or plan.total, device=args.device) if budget else []
    if args.json:
        print(json.dumps({**plan.to_dict(), "budget_gb": args.budget_gb, "fits": None if budget is None else
                          plan.total <= budget, "would_help": helps}, indent=2))
    else:
        print(plan.render(), end="")
        if budget is not None:
            verdict = "fits" if plan.total <= budget else "does not fit"
            print(f"{verdict} in {args.budget_gb:g} GiB" + (f"; would help: {'; '.join(helps)}" if helps and
                                                            plan.total > budget else ""))
    warning = _memory_warning(cfg, home, plan) if args.device == "cuda" else None
    if warning:
        print(f"  warning: {warning}", file=sys.stderr)
    return 0


def _config_show(args: argparse.Namespace) -> int:
    from simpletuner_core.cli import UsageError
    from simpletuner_core.config import ConfigInvalid
    from simpletuner_core.config.show import effective, render

    home = home_from_args(args)
    job_id = getattr(args, "job", None)
    seed = None
    if job_id:
        if args.env or args.config:
            raise UsageError("give one of --env, --config and --job")
        raw, seed = _job_config(home, job_id)
    else:
        raw = _load_raw(args, home)
    try:
        table = effective(raw, parse_overrides(getattr(args, "set", []) or []))
    except ConfigInvalid as exc:
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        raise UsageError(f"invalid configuration ({len(exc.errors)} error(s))") from None
    if seed is not None and table["seed"]["value"] is None:
        table["seed"] = {"value": seed, "source": "drawn"}  # the run drew it: --set seed=N repeats the run
    if args.json:
        print(json.dumps(table, indent=2, sort_keys=True, default=str))
    else:
        print(render(table), end="")
    return 0


def _job_config(home: Path, job_id: str) -> tuple[dict[str, Any], int | None]:
    """The config job ``job_id`` ran with, and the seed its trainer reported (drawn when the config set none)."""
    from simpletuner_core.cli import UsageError
    from simpletuner_core.jobs.event_log import run_seed
    from simpletuner_core.jobs.models import JobError
    from simpletuner_core.jobs.store import open_store

    store = open_store(home)
    try:
        job = store.get_job(job_id)
    except JobError as exc:
        raise UsageError(str(exc)) from None
    return dict(job.config), run_seed(store, job.id)


def _config_validate(args: argparse.Namespace) -> int:
    from simpletuner_core.cli import UsageError
    from simpletuner_core.config.errors import ConfigInvalid
    from simpletuner_core.training.data_setup import PreflightRejected
    from simpletuner_core.training.engine import plan_only

    home = home_from_args(args)
    cfg = _validated(args, home)
    try:
        plan = plan_only(cfg, home)
    except PreflightRejected as exc:
        print(exc.plan.render())
        raise UsageError(f"dataset plan rejected: {exc}") from None
    except ConfigInvalid as exc:
        raise UsageError(str(exc)) from None
    print(plan.render())
    warning = _memory_warning(cfg, home)
    if warning:
        print(f"  warning: {warning}", file=sys.stderr)
    print("Configuration Valid")
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    from simpletuner_core.plugins import get_plugin_manager, get_registry

    pm = get_plugin_manager()
    dists = {pm.get_name(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    rows = []
    for name, hooks in get_registry().hooks_by_plugin().items():
        dist = dists.get(name)
        ver = f"{dist.project_name} {dist.version}" if dist else f"simpletuner-core {version('simpletuner-core')}"
        rows.append({"name": name, "distribution": ver, "hooks": hooks})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']}  ({row['distribution']})\n    {', '.join(row['hooks'])}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from simpletuner_core.plugins import get_registry

    families = get_registry().families.values()
    if args.json:
        print(json.dumps([{"name": f.name, "aliases": list(f.aliases), "model_types": list(f.model_types),
                           "flavours": {n: fl.hub_id for n, fl in f.flavours.items()}} for f in families], indent=2))
        return 0
    for fam in families:
        alias = f" (alias: {', '.join(fam.aliases)})" if fam.aliases else ""
        print(f"{fam.name}{alias}: {fam.description}")
        for name, flavour in fam.flavours.items():
            print(f"    {name:<18} {flavour.hub_id or '(built offline)'}")
        if not fam.flavours:
            print("    (no flavours yet)")
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from simpletuner_core.demo_data import write_demo_dataset

    files = write_demo_dataset(Path(args.directory), count=args.count, size=args.size)
    print(f"wrote {len(files)} images with captions to {args.directory}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from simpletuner_core.demo import run_demo

    return run_demo(home_from_args(args), steps=args.steps)


def _noop(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


@hookimpl
def register_cli_commands(register: Callable[[CliCommand], None]) -> None:
    register(CliCommand("train", "Train from an environment or a config file (in this process).", _add_source,
                        _train))

    def config_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("action", choices=["validate", "show", "plan", "reference", "compat"],
                       help="validate: config rules + dataset preflight plan; plan: estimated peak accelerator "
                            "memory, by bucket (no weights, no GPU needed); show: every key's effective value "
                            "and its source (file, default, override, alias:OLD); reference: print every key "
                            "(markdown); compat: every SimpleTuner key and its status here (markdown)")
        p.add_argument("--json", action="store_true", help="show: one JSON object, key -> {value, source}; "
                                                            "plan: the plan as JSON")
        p.add_argument("--budget-gb", type=float, help="plan: say whether it fits in this many GiB and what helps")
        p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                       help="plan: the device to plan for (cuda: bf16 autocast under mixed_precision=auto)")
        p.add_argument("--job", help="show: the config a job ran with, and the seed it used ('drawn' when the "
                                     "config set none)")
        _add_source(p)

    register(CliCommand("config", "Check a configuration without loading a model, or list every key.",
                        config_args, _config))
    register(CliCommand("plugins", "List installed plugins and the hooks they implement.", _noop, _plugins))

    def models_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("action", nargs="?", choices=["list"], default="list")
        _noop(p)

    register(CliCommand("models", "List model families and flavours.", models_args, _models))

    def demo_data_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("directory")
        p.add_argument("--count", type=int, default=12)
        p.add_argument("--size", type=int, default=64)

    register(CliCommand("demo-data", "Write a small learnable image+caption set.", demo_data_args, _demo_data))

    def demo_args(p: argparse.ArgumentParser) -> None:
        _add_home(p)
        p.add_argument("--steps", type=int, default=150)

    register(CliCommand("demo", "Set up and train the tiny PixArt demo environment on CPU.", demo_args, _demo))
