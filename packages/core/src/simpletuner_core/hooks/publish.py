"""Background publishing: checkpoints and the final model go to every publisher the job asks for.

Uploads run in one worker thread, in order, so training never waits on the network; the end of a run waits for
the queue (the final model must be out before the job is reported complete). Each upload is limited to
``publish_timeout`` seconds (it is reported failed and left behind when it overruns), so that wait is bounded.
A cancelled run waits at most :data:`ABANDON_WAIT_S` for an upload in flight and skips the queued ones; both
are reported as ``publish.failed`` ("abandoned"). Each upload is recorded as a ``publish.completed`` or
``publish.failed`` event, and ``post_upload_script`` runs once per successful upload.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import attrs

#: Never uploaded with the final model: training state and scratch space.
FINAL_IGNORE = ("checkpoint-*", ".checkpoint-*", "logs", ".*")
#: Seconds a cancelled run waits for the upload in flight before leaving it behind.
ABANDON_WAIT_S = 10.0


@attrs.frozen
class PublishItem:
    """What a publisher receives: a directory to upload and why."""

    path: Path
    kind: str  # checkpoint | final
    step: int
    config: Any
    job_id: str


class Publishing:
    """The job's publishing queue; ``submit`` returns at once, ``drain`` waits for everything submitted."""

    def __init__(self, specs: list[Any], cfg: Any, job_id: str, emitter: Any, scripts: Any,
                 script_values: Any) -> None:
        self.specs = specs
        self.cfg = cfg
        self.job_id = job_id
        self.emitter = emitter
        self.scripts = scripts
        self.script_values = script_values  # (step, local_path, remote) -> placeholder values
        self.results: list[dict[str, Any]] = []
        self._queue: queue.Queue[PublishItem | None] = queue.Queue()
        self._abandon = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._current: tuple[Any, PublishItem, float] | None = None  # the upload in flight
        self._silenced = False  # after an abandon: late results of a left-behind upload are not reported

    def wanted(self, kind: str) -> list[Any]:
        return [spec for spec in self.specs if spec.wants(self.cfg, kind)]

    def submit(self, path: Path, kind: str, step: int) -> bool:
        if not self.wanted(kind):
            return False
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="publishing", daemon=True)
            self._thread.start()
        self._queue.put(PublishItem(Path(path), kind, step, self.cfg, self.job_id))
        return True

    def drain(self, abandon: bool = False, timeout: float | None = None) -> list[dict[str, Any]]:
        """Wait for queued uploads; returns every result.

        With ``abandon`` (a cancelled run) uploads not started are skipped and the one in flight gets at most
        ``timeout`` (default :data:`ABANDON_WAIT_S`) seconds; whatever is left is reported as abandoned. Without
        it, every upload is bounded by ``publish_timeout``, so the wait is too.
        """
        if self._thread is not None:
            if abandon:
                self._abandon.set()
            self._queue.put(None)
            self._thread.join(ABANDON_WAIT_S if abandon and timeout is None else timeout)
            if self._thread.is_alive():  # an upload is still running: leave it behind, report it
                with self._lock:
                    current, self._current = self._current, None
                    if current is not None:
                        spec, item, started = current
                        self._failed(spec, item, started, "abandoned: the run ended while this upload was still "
                                     "running")
                    self._silenced = True
                    while True:  # queued behind it: never started
                        try:
                            queued = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if queued is not None:
                            self._skipped(queued)
                    self._queue.put(None)
            self._thread = None
        return list(self.results)

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                if self._abandon.is_set():
                    with self._lock:
                        self._skipped(item)
                    continue
                for spec in self.wanted(item.kind):
                    self._publish(spec, item)
        finally:
            self.emitter.thread_done()

    def _skipped(self, item: PublishItem) -> None:
        """Report an upload skipped by an abandon (caller holds the lock)."""
        for spec in self.wanted(item.kind):
            self._failed(spec, item, time.monotonic(), "abandoned: the run was cancelled before this upload "
                         "started", force=True)

    def _failed(self, spec: Any, item: PublishItem, started: float, error: str, force: bool = False) -> None:
        """Record a failure (caller holds the lock); after an abandon only forced reports go out."""
        if self._silenced and not force:
            return
        result = {"publisher": spec.name, "kind": item.kind, "step": item.step, "path": str(item.path),
                  "ok": False, "error": error[:1000], "seconds": round(time.monotonic() - started, 3)}
        self.results.append(result)
        self.emitter.emit("publish.failed", level="warning", **result,
                          message=f"{spec.name}: publishing {item.kind} {item.step} failed: {result['error']}")

    def _call(self, spec: Any, item: PublishItem) -> Any:
        """``spec.publish(item)``, bounded by ``publish_timeout`` (the upload runs in its own daemon thread)."""
        limit = getattr(self.cfg, "publish_timeout", None)
        if not limit:
            return spec.publish(item)
        outcome: dict[str, Any] = {}

        def upload() -> None:
            try:
                outcome["remote"] = spec.publish(item)
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=upload, name=f"publish-{spec.name}", daemon=True)
        thread.start()
        thread.join(limit)
        if thread.is_alive():
            raise TimeoutError(f"the upload took longer than publish_timeout ({limit:g}s); left behind")
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("remote")

    def _publish(self, spec: Any, item: PublishItem) -> None:
        started = time.monotonic()
        base = {"publisher": spec.name, "kind": item.kind, "step": item.step, "path": str(item.path)}
        with self._lock:
            self._current = (spec, item, started)
        try:
            if not item.path.exists():
                raise FileNotFoundError(f"{item.path} no longer exists (removed by checkpoints_total_limit "
                                        "before its upload started?)")
            remote = self._call(spec, item)
        except Exception as exc:  # an upload failure is reported, never raised into training
            with self._lock:
                if self._current is not None:
                    self._current = None
                    self._failed(spec, item, started, f"{type(exc).__name__}: {exc}")
            return
        with self._lock:
            if self._current is None or self._silenced:  # already reported as abandoned
                return
            self._current = None
            result = {**base, "ok": True, "remote": remote, "seconds": round(time.monotonic() - started, 3)}
            self.results.append(result)
            self.emitter.emit("publish.completed", **result)
        if self.cfg.post_upload_script:
            values = self.script_values(item.step, str(item.path), remote or "")
            try:
                self.scripts.run("post_upload", self.cfg.post_upload_script, values)
            except Exception:  # recorded as a hook.script event; an upload hook cannot fail a finished step
                pass
