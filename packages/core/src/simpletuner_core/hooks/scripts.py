"""Hook scripts (``post_checkpoint_script``, ``post_upload_script``, ``validation_external_script``).

A command is split like a shell would (``shlex``) but never run through one: each argv item has its
``{placeholder}``s filled in separately, so a value with spaces or quotes stays one argument and cannot inject
commands. Every run has a timeout (the whole process group is killed) that bounds the call itself: output is
read in a thread into a bounded tail buffer, so neither a chatty script nor a detached child that keeps the
output pipe open can hold the caller past ``timeout`` plus a few seconds of grace. The output tail is recorded
in a ``hook.script`` event (argv and output go to the event log and to webhooks: pass secrets to scripts in
the environment, never as arguments). A failing script is reported, and only fails the job when
``hook_script_fatal`` is set (foreground scripts only: a background script cannot stop a step that has passed).
At most one background run per hook is in flight; a run due while the previous one is still going is skipped
and reported.
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import string
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

#: Placeholders every hook understands, besides every ``validation_*`` config key.
CONTEXT_PLACEHOLDERS = ("local_checkpoint_path", "global_step", "tracker_run_name", "tracker_project_name",
                        "model_family", "model_type", "lora_type", "huggingface_path", "remote_checkpoint_path")
OUTPUT_LIMIT = 4000  # characters of output kept in the event (the tail: errors come last)
#: Seconds to wait for a killed process group to be reaped, and for the output pipe to reach end-of-file after
#: the script exited (a child that outlives it may hold the pipe open: the rest of its output is not read).
KILL_GRACE_S = 5.0
PIPE_GRACE_S = 1.0


class HookScriptError(RuntimeError):
    """A hook script failed and ``hook_script_fatal`` is set."""


def known_placeholders(config_keys: Sequence[str]) -> set[str]:
    return {*CONTEXT_PLACEHOLDERS, *(k for k in config_keys if k.startswith("validation_"))}


def split_command(command: str | Sequence[str]) -> list[str]:
    """A config value as an argv template: a string is split like a POSIX shell would, a list is taken as is."""
    if isinstance(command, str):
        argv = shlex.split(command)
    else:
        argv = [str(part) for part in command]
    if not argv:
        raise ValueError("the command is empty")
    return argv


def placeholders_in(argv: Sequence[str]) -> set[str]:
    names = set()
    for part in argv:
        for _, field, _, _ in string.Formatter().parse(part):
            if field is not None:
                names.add(field)
    return names


def check_command(command: str | Sequence[str], config_keys: Sequence[str]) -> str | None:
    """Why ``command`` cannot run (bad quoting, an unknown placeholder), or None; used by the config rules."""
    try:
        argv = split_command(command)
        used = placeholders_in(argv)
    except ValueError as exc:
        return str(exc)
    unknown = sorted(used - known_placeholders(config_keys))
    if unknown:
        return (f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; known: "
                f"{', '.join('{' + k + '}' for k in CONTEXT_PLACEHOLDERS)} and any {{validation_*}} key")
    return None


def context_values(cfg: Any, *, global_step: int, job_id: str, local_checkpoint_path: str = "",
                   remote_checkpoint_path: str = "") -> dict[str, str]:
    """The placeholder values for one hook run; unset values are empty strings, never ``None``."""
    import attrs as _attrs

    def text(value: Any) -> str:
        return "" if value is None else str(value)

    values = {a.name: text(getattr(cfg, a.name)) for a in _attrs.fields(type(cfg))
              if a.name.startswith("validation_")}
    hub = cfg.hub_model_id if getattr(cfg, "push_to_hub", False) else None
    values.update(
        local_checkpoint_path=text(local_checkpoint_path), global_step=str(global_step),
        tracker_run_name=text(cfg.tracker_run_name or job_id), tracker_project_name=text(cfg.tracker_project_name),
        model_family=text(cfg.model_family), model_type=text(cfg.model_type), lora_type=text(cfg.lora_type),
        huggingface_path=text(hub), remote_checkpoint_path=text(remote_checkpoint_path),
    )
    return values


def render(command: str | Sequence[str], values: Mapping[str, str]) -> list[str]:
    """argv with placeholders filled in, one argv item at a time (no shell, no re-splitting)."""
    out = []
    for part in split_command(command):
        try:
            out.append(part.format_map(values))
        except (KeyError, IndexError) as exc:
            raise ValueError(f"unknown placeholder {exc} in {part!r}") from None
    return out


@attrs.frozen
class ScriptResult:
    hook: str
    argv: list[str]
    returncode: int | None
    timed_out: bool
    seconds: float
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


class _Tail:
    """Reads a pipe in a daemon thread, keeping only the last ``limit`` bytes (memory stays bounded)."""

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.data = bytearray()
        self.cut = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="hook-output", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fd = self.stream.fileno()
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.1)  # polls, so ``finish`` can stop it at any time
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                self.data += chunk
                if len(self.data) > self.limit:
                    extra = len(self.data) - self.limit
                    del self.data[:extra]
                    self.cut += extra
        except (OSError, ValueError):  # the pipe went away under us
            return

    def finish(self, grace: float) -> str:
        """Wait up to ``grace`` seconds for end-of-file, then stop reading, close the pipe and return the text."""
        self._thread.join(grace)
        self._stop.set()
        self._thread.join(1.0)
        if not self._thread.is_alive():  # never close a descriptor another thread may still be reading
            self.stream.close()
        text = bytes(self.data).decode("utf-8", errors="replace")
        cut = self.cut
        if len(text) > OUTPUT_LIMIT:
            cut += len(text[:-OUTPUT_LIMIT].encode("utf-8"))
            text = text[-OUTPUT_LIMIT:]
        return f"[{cut} bytes of earlier output cut]\n{text}" if cut else text


def run_argv(hook: str, argv: list[str], timeout: float) -> ScriptResult:
    """Run without a shell; on timeout kill the script's whole process group (children included).

    Returns within about ``timeout + PIPE_GRACE_S`` (``+ KILL_GRACE_S`` if a killed process is slow to be
    reaped), even when a child that started its own session keeps the output pipe open. ``timed_out`` means the
    script itself did not exit in time.
    """
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    except OSError as exc:  # not found, not executable
        return ScriptResult(hook, argv, None, False, 0.0, f"could not start: {exc}")
    tail = _Tail(proc.stdout, 4 * OUTPUT_LIMIT)  # bytes: enough for OUTPUT_LIMIT characters of UTF-8
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:  # not reaped yet (uninterruptible I/O): report what we have
            pass
    text = tail.finish(PIPE_GRACE_S)
    return ScriptResult(hook, argv, proc.returncode, timed_out, round(time.monotonic() - started, 3), text)


class HookScripts:
    """Runs a job's hook scripts and records each run in the job's event log."""

    def __init__(self, emitter: Any, timeout: float, fatal: bool = False) -> None:
        self.emitter = emitter
        self.timeout = timeout
        self.fatal = fatal
        self._threads: list[threading.Thread] = []
        self._running: dict[str, threading.Thread] = {}  # hook -> its background run in flight

    def run(self, hook: str, command: str | Sequence[str], values: Mapping[str, str],
            background: bool = False) -> ScriptResult | None:
        """Run now (returns the result; raises :class:`HookScriptError` when fatal) or in a thread (None)."""
        try:
            argv = render(command, values)
        except ValueError as exc:
            return self._record(ScriptResult(hook, [], None, False, 0.0, f"bad command: {exc}"), background)
        if not background:
            return self._record(run_argv(hook, argv, self.timeout), background=False)
        previous = self._running.get(hook)
        if previous is not None and previous.is_alive():  # one run per hook at a time: never pile them up
            self.emitter.emit("hook.script", level="warning", hook=hook, argv=argv, returncode=None,
                              timed_out=False, seconds=0.0, output="", background=True, skipped=True,
                              message=f"{hook} script skipped: its previous run is still going")
            return None
        thread = threading.Thread(target=self._background, args=(hook, argv), name=f"hook-{hook}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        self._running[hook] = thread
        thread.start()
        return None

    def _background(self, hook: str, argv: list[str]) -> None:
        try:
            self._record(run_argv(hook, argv, self.timeout), background=True)
        finally:
            self.emitter.thread_done()

    def _record(self, result: ScriptResult, background: bool) -> ScriptResult:
        if result.timed_out:
            summary = f"{result.hook} script killed after its {self.timeout:g}s timeout"
        elif result.returncode is None:
            summary = f"{result.hook} script could not run: {result.output}"
        else:
            summary = f"{result.hook} script exited with {result.returncode} after {result.seconds:.2f}s"
        self.emitter.emit("hook.script", level="info" if result.ok else "warning", hook=result.hook,
                          argv=result.argv, returncode=result.returncode, timed_out=result.timed_out,
                          seconds=result.seconds, output=result.output, background=background, message=summary)
        if not result.ok and self.fatal and not background:
            raise HookScriptError(summary + (f": {result.output.strip()[-300:]}" if result.output.strip() else ""))
        return result

    def wait(self, timeout: float | None = None) -> bool:
        """Let background scripts finish, waiting at most ``timeout`` seconds (default: the script timeout plus
        the kill and pipe grace, which bounds every run); False when some are still going (they are daemon
        threads and cannot keep the process alive)."""
        limit = self.timeout + KILL_GRACE_S + PIPE_GRACE_S + 5.0 if timeout is None else timeout
        deadline = time.monotonic() + limit
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            self.emitter.log(f"{len(self._threads)} background hook script(s) still running after {limit:g}s; "
                             "not waiting for them", level="warning")
            return False
        return True
