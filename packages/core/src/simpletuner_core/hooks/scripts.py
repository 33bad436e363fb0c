"""Hook scripts (``post_checkpoint_script``, ``post_upload_script``, ``validation_external_script``).

A command is split like a shell would (``shlex``) but never run through one: each argv item has its
``{placeholder}``s filled in separately, so a value with spaces or quotes stays one argument and cannot inject
commands. Every run has a timeout (the whole process group is killed), its output is captured, truncated and
recorded as a ``hook.script`` event. A failing script is reported, and only fails the job when
``hook_script_fatal`` is set (foreground scripts only: a background script cannot stop a step that has passed).
"""

from __future__ import annotations

import os
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


def run_argv(hook: str, argv: list[str], timeout: float) -> ScriptResult:
    """Run without a shell; on timeout kill the script's whole process group (children included)."""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    except OSError as exc:  # not found, not executable
        return ScriptResult(hook, argv, None, False, 0.0, f"could not start: {exc}")
    timed_out = False
    try:
        raw, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raw, _ = proc.communicate()
    text = raw.decode("utf-8", errors="replace")
    if len(text) > OUTPUT_LIMIT:
        text = f"[{len(text) - OUTPUT_LIMIT} characters cut]\n" + text[-OUTPUT_LIMIT:]
    return ScriptResult(hook, argv, proc.returncode, timed_out, round(time.monotonic() - started, 3), text)


class HookScripts:
    """Runs a job's hook scripts and records each run in the job's event log."""

    def __init__(self, emitter: Any, timeout: float, fatal: bool = False) -> None:
        self.emitter = emitter
        self.timeout = timeout
        self.fatal = fatal
        self._threads: list[threading.Thread] = []

    def run(self, hook: str, command: str | Sequence[str], values: Mapping[str, str],
            background: bool = False) -> ScriptResult | None:
        """Run now (returns the result; raises :class:`HookScriptError` when fatal) or in a thread (None)."""
        try:
            argv = render(command, values)
        except ValueError as exc:
            return self._record(ScriptResult(hook, [], None, False, 0.0, f"bad command: {exc}"), background)
        if not background:
            return self._record(run_argv(hook, argv, self.timeout), background=False)
        thread = threading.Thread(target=self._background, args=(hook, argv), name=f"hook-{hook}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
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

    def wait(self) -> None:
        """Let background scripts finish; each is bounded by the timeout, so this is too."""
        for thread in self._threads:
            thread.join()
        self._threads = []
