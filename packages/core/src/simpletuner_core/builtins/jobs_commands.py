"""``simpletuner jobs …``: submit to the queue, list, show, follow logs, and command running jobs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from simpletuner_core.builtins.commands import home_from_args, parse_overrides
from simpletuner_core.hookspecs import hookimpl
from simpletuner_core.records import CliCommand


def _ids(text: str | None) -> tuple[int, ...]:
    from simpletuner_core.cli import UsageError

    if not text:
        return ()
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"--gpu-ids expects comma-separated integers, got {text!r}") from None


def _runner(args: argparse.Namespace) -> Any:
    from simpletuner_core.jobs.runner import Runner
    from simpletuner_core.jobs.store import open_store

    home = home_from_args(args)
    return Runner(open_store(home), home)


def _submit(args: argparse.Namespace, runner: Any) -> int:
    overrides = parse_overrides(args.set or [])
    labels = {}
    for item in args.worker_label or []:
        key, sep, glob = item.partition("=")
        if not sep or not key:
            raise ValueError(f"worker_labels: --worker-label takes KEY=GLOB, got {item!r}")
        labels[key] = glob
    kwargs = {"env": args.env, "config": overrides, "gpus": args.gpus, "device_ids": _ids(args.gpu_ids),
              "any_gpu": args.any_gpu, "target": args.target, "worker_labels": labels or None}
    if args.dry_run:
        report = runner.dry_run(**kwargs)
        if args.json:
            print(json.dumps({k: v for k, v in report.items() if k != "plan_text"}, indent=2, default=str))
        else:
            print(f"would {report['would']}: GPUs {report['allocated_gpus'] or '-'}"
                  f"{' (CPU slot)' if report['cpu_slot'] else ''}"
                  f"{'; ' + report['reason'] if report['reason'] else ''}")
            if report["queue_position"]:
                print(f"queue position: {report['queue_position']}")
            print(report["plan_text"])
            print("resolved config:")
            print(json.dumps(report["config"], indent=2, default=str))
        return 0
    import getpass

    result = runner.submit(**kwargs, priority=args.priority, no_wait=args.no_wait, user=getpass.getuser())
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif result.status == "rejected":
        print(f"rejected: {result.reason}", file=sys.stderr)
    else:
        where = f"GPUs {list(result.allocated_gpus)}" if result.allocated_gpus else "CPU slot"
        print(f"{result.job_id} {result.status}" + (f" on {where}" if result.status == "running" else
                                                     f" (position {result.queue_position}: {result.reason})"))
    return 0 if result.success else 3


def _list(args: argparse.Namespace, runner: Any) -> int:
    runner.reconcile()
    jobs = runner.store.list_jobs(states=[args.state] if args.state else None)
    if args.json:
        print(json.dumps([j.to_dict() for j in jobs], indent=2, default=str))
        return 0
    for job in jobs:
        gpus = ",".join(map(str, job.allocated_gpus)) or ("cpu" if job.cpu_slot else "-")
        print(f"{job.id}  {job.state:<9}  {job.env or '-':<20}  gpus={gpus}  {job.reason or ''}")
    return 0


def _show(args: argparse.Namespace, runner: Any) -> int:
    runner.reconcile()
    job = runner.store.get_job(args.job_id)
    data = job.to_dict()
    data["queue_position"] = runner.store.queue_position(job.id)
    # the seed the run used: the config's, or the one drawn for it (repeat the run with --set seed=N)
    from simpletuner_core.jobs.event_log import run_seed

    data["seed"] = run_seed(runner.store, job.id)
    print(json.dumps(data, indent=2, default=str))
    return 0


def _logs(args: argparse.Namespace, runner: Any) -> int:
    from simpletuner_core.events.progress import ProgressPrinter
    from simpletuner_core.jobs.event_log import follow

    runner.store.get_job(args.job_id)  # unknown job: clear error before waiting
    bar = ProgressPrinter(sys.stdout)
    events = follow(runner.store, args.job_id, after_id=args.since) if args.follow else \
        runner.store.read_events(args.job_id, after_id=args.since)
    for event in events:
        if args.json:
            print(json.dumps(event.to_dict(), default=str), flush=True)
        elif event.type == "log":
            bar.emit(event) if event.level in ("warning", "error") else print(event.data.get("message"))
        else:
            bar.emit(event)
    bar.close()
    return 0


def _command(name: str) -> Callable[[argparse.Namespace, Any], int]:
    def run(args: argparse.Namespace, runner: Any) -> int:
        job = runner.command(args.job_id, name)
        print(f"{job.id}: {name} requested (state {job.state})")
        return 0

    return run


_ACTIONS: dict[str, Callable[[argparse.Namespace, Any], int]] = {
    "submit": _submit, "list": _list, "show": _show, "logs": _logs, "stop": _command("stop"),
    "cancel": _command("cancel"), "validate": _command("validate"), "checkpoint": _command("checkpoint"),
}


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="state directory (default: $SIMPLETUNER_HOME or ~/.simpletuner)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("submit", help="queue a job for an environment (starts now when resources allow)")
    s.add_argument("env")
    s.add_argument("--no-wait", action="store_true", help="reject instead of queueing when resources are busy")
    s.add_argument("--any-gpu", action="store_true", help="take any free GPUs instead of --gpu-ids")
    s.add_argument("--gpus", type=int, help="number of GPUs (default: 1 when the machine has GPUs, else 0)")
    s.add_argument("--gpu-ids", help="specific GPU indices, e.g. 0,1")
    s.add_argument("--priority", type=int, default=0, help="higher starts first")
    s.add_argument("--target", help="auto (default: a matching idle remote worker, else here), local, worker")
    s.add_argument("--worker-label", action="append", metavar="KEY=GLOB",
                   help="a label a remote worker must match ('*' globs), e.g. gpu_type='a100*'")
    s.add_argument("--dry-run", action="store_true", help="show GPUs, queue position, config and plan only")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    s.add_argument("--json", action="store_true")
    lst = sub.add_parser("list", help="jobs and their states")
    lst.add_argument("--state")
    lst.add_argument("--json", action="store_true")
    for name, text in (("show", "one job as JSON"), ("stop", "finish the step, checkpoint, exit"),
                       ("cancel", "exit after the current step without saving"),
                       ("validate", "run validation after the next step"),
                       ("checkpoint", "save a checkpoint after the next step")):
        sub.add_parser(name, help=text).add_argument("job_id")
    logs = sub.add_parser("logs", help="the job's events; -f follows with a progress bar")
    logs.add_argument("job_id")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--since", type=int, default=0, help="only events after this id")
    logs.add_argument("--json", action="store_true")


def _run(args: argparse.Namespace) -> int:
    from simpletuner_core.cli import UsageError
    from simpletuner_core.config import ConfigInvalid
    from simpletuner_core.config.environments import EnvironmentError_
    from simpletuner_core.jobs.models import JobError

    runner = _runner(args)
    try:
        return _ACTIONS[args.action](args, runner)
    except ConfigInvalid as exc:
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        raise UsageError(f"invalid configuration ({len(exc.errors)} error(s))") from None
    except (JobError, EnvironmentError_, ValueError) as exc:
        raise UsageError(str(exc.args[0]) if exc.args else str(exc)) from None
    finally:
        runner.store.close()


@hookimpl
def register_cli_commands(register: Callable[[CliCommand], None]) -> None:
    register(CliCommand("jobs", "Queue and manage background training jobs.", _arguments, _run))
