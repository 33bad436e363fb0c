"""``simpletuner worker``: flags, with SimpleTuner's environment variables as their defaults."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from simpletuner_core import paths


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--orchestrator-url", default=env("SIMPLETUNER_ORCHESTRATOR_URL"),
                        help="the server to work for (env SIMPLETUNER_ORCHESTRATOR_URL)")
    parser.add_argument("--worker-token", default=env("SIMPLETUNER_WORKER_TOKEN"),
                        help="the wt_ token from POST /api/admin/workers (env SIMPLETUNER_WORKER_TOKEN)")
    parser.add_argument("--name", default=env("SIMPLETUNER_WORKER_NAME"),
                        help="a name for logs (env SIMPLETUNER_WORKER_NAME)")
    parser.add_argument("--persistent", action="store_true", default=_truthy(env("SIMPLETUNER_WORKER_PERSISTENT")),
                        help="stay after a job and reconnect (env SIMPLETUNER_WORKER_PERSISTENT); "
                             "default: ephemeral, exit after one job")
    parser.add_argument("--home", default=env("SIMPLETUNER_WORKER_HOME"),
                        help="the agent's own state directory (env SIMPLETUNER_WORKER_HOME; default HOME/worker)")
    parser.add_argument("--worker_upload_outputs", "--worker-upload-outputs", action="store_true",
                        default=_truthy(env("SIMPLETUNER_WORKER_UPLOAD_OUTPUTS")),
                        help="copy a completed job's final weights back to the orchestrator's output dir")
    parser.add_argument("--heartbeat-interval", type=float, default=None, metavar="SECONDS",
                        help="override the orchestrator's heartbeat interval (default: what it says, 30 s)")
    parser.add_argument("--no-shared-storage", action="store_true",
                        default=not _truthy(env("SIMPLETUNER_WORKER_SHARED_STORAGE", "1")),
                        help="never read the orchestrator's dataset paths in place; always fetch by hash "
                             "(env SIMPLETUNER_WORKER_SHARED_STORAGE=0)")


def run(args: argparse.Namespace) -> int:
    from simpletuner_core.agent.agent import Agent
    from simpletuner_core.agent.client import Orchestrator

    if not args.orchestrator_url or not args.worker_token:
        print("error: --orchestrator-url and --worker-token (or their SIMPLETUNER_ env vars) are required")
        return 2
    home = Path(args.home).expanduser() if args.home else paths.home() / "worker"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["SIMPLETUNER_HOME"] = str(home)  # the trainer processes the local runner spawns share it
    agent = Agent(Orchestrator(args.orchestrator_url, args.worker_token), home, name=args.name,
                  persistent=args.persistent, upload_outputs=args.worker_upload_outputs,
                  shared_storage=not args.no_shared_storage, heartbeat=args.heartbeat_interval,
                  say=lambda line: print(line, flush=True))
    def terminate(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        return agent.run()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: cancel the local job, tell the orchestrator (it requeues)
        agent.shutdown()
        return 130
