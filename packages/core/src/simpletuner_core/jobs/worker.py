"""The trainer process the runner spawns: ``python -m simpletuner_core.jobs.worker JOB_ID``.

It trains the job recorded in the store, records how it ended, then lets the runner start whatever the queue
admits next — so GPUs are released (the job's final state) before the next job starts.
"""

from __future__ import annotations

import os
import sys

from simpletuner_core import paths


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m simpletuner_core.jobs.worker JOB_ID", file=sys.stderr)
        return 2
    from simpletuner_core.config import ConfigInvalid, validate
    from simpletuner_core.jobs import models as m
    from simpletuner_core.jobs.execute import execute
    from simpletuner_core.jobs.runner import Runner
    from simpletuner_core.jobs.store import open_store
    from simpletuner_core.plugins import get_registry

    home = paths.home()
    store = open_store(home)
    job_id = args[0]
    try:
        job = store.get_job(job_id)
    except m.JobError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    registry = get_registry()
    try:
        cfg = validate(job.config, registry)
    except ConfigInvalid as exc:
        if int(os.environ.get("RANK", "0")) == 0:
            store.update_job(job_id, state=m.FAILED, reason=f"invalid configuration: {exc}")
        return 2
    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        code, _ = execute(cfg, home, registry, job_id, store)
    finally:
        if main_process:
            Runner(store, home, registry=registry).kick()  # start what the queue admits now
        store.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
