"""Server settings: one frozen value built from defaults and the environment.

Kept free of aiohttp so the CLI plugin can read defaults without importing the web stack.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
DEFAULT_MAX_BODY_BYTES = 2**20  # JSON and form bodies: configs, logins, commands
DEFAULT_MAX_DATALOADER_BYTES = 16 * 2**20  # a dataloader JSON may list many datasets


def parse_port(value: str | int) -> int:
    """A TCP port (0 lets the OS pick); the error names the bad value so env typos are obvious."""
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"port must be an integer between 0 and 65535, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer between 0 and 65535, got {value!r}")
    return port


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$SIMPLETUNER_HOME`` or ``~/.simpletuner``: where jobs and server state will live."""
    env = os.environ if environ is None else environ
    raw = env.get("SIMPLETUNER_HOME") or "~/.simpletuner"
    return Path(raw).expanduser()


def default_host(environ: Mapping[str, str] | None = None) -> str:
    """``$SIMPLETUNER_HOST`` or loopback: the server is local-only unless asked otherwise."""
    env = os.environ if environ is None else environ
    return env.get("SIMPLETUNER_HOST") or DEFAULT_HOST


def default_port(environ: Mapping[str, str] | None = None) -> int:
    """``$SIMPLETUNER_PORT`` or 8001; raises ValueError for a malformed value instead of guessing."""
    env = os.environ if environ is None else environ
    raw = env.get("SIMPLETUNER_PORT")
    return DEFAULT_PORT if not raw else parse_port(raw)


def parse_bool(value: str | bool) -> bool:
    """Strict: a typo in a security switch must fail loudly rather than read as "off"."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (1/0, true/false, yes/no, on/off), got {value!r}")


def default_trust_proxy(environ: Mapping[str, str] | None = None) -> bool:
    """``$SIMPLETUNER_TRUST_PROXY``: off unless a reverse proxy you control sets ``X-Forwarded-For``."""
    env = os.environ if environ is None else environ
    return parse_bool(env.get("SIMPLETUNER_TRUST_PROXY", ""))


def _valid_port(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    parse_port(value)


def _positive(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


@attrs.frozen
class ServerSettings:
    """Everything ``create_app`` needs; frozen so handlers can share it without locking."""

    host: str = DEFAULT_HOST
    port: int = attrs.field(default=DEFAULT_PORT, validator=_valid_port)
    home: Path = attrs.field(factory=default_home, converter=lambda v: Path(v).expanduser())
    #: Largest accepted request body (``$SIMPLETUNER_MAX_BODY_BYTES``, ``--max-body-bytes``); a larger one gets a
    #: JSON 413 before any handler reads it. Routes with a documented need have their own limit (below).
    max_body_bytes: int = attrs.field(default=DEFAULT_MAX_BODY_BYTES, converter=int, validator=_positive)
    #: ``POST /api/configs/{name}/dataloader`` only (``$SIMPLETUNER_MAX_DATALOADER_BYTES``).
    max_dataloader_bytes: int = attrs.field(default=DEFAULT_MAX_DATALOADER_BYTES, converter=int,
                                            validator=_positive)
    #: Read the client address from ``X-Forwarded-For`` (last hop). Off: the TCP peer is the client, and a
    #: loopback peer carrying forwarding headers is not treated as local (it is a proxy on this host).
    trust_proxy: bool = attrs.field(default=False, converter=parse_bool)
    #: Dataset uploads stream to disk past ``max_body_bytes``, under their own limits (``$SIMPLETUNER_MAX_…``).
    max_upload_bytes: int = attrs.field(default=4 * 2**30, converter=int, validator=_positive)
    max_upload_file_bytes: int = attrs.field(default=2**30, converter=int, validator=_positive)
    max_extracted_bytes: int = attrs.field(default=16 * 2**30, converter=int, validator=_positive)
    #: Extra directories non-admin jobs may read and write (``$SIMPLETUNER_ALLOWED_ROOTS``, ``os.pathsep`` or
    #: comma separated), next to ``home`` and ``datasets_dir`` (see ``job_policy``).
    allowed_roots: tuple[Path, ...] = attrs.field(default=(), converter=lambda v: tuple(
        Path(str(p).strip()).expanduser() for p in (v.replace(os.pathsep, ",").split(",") if isinstance(v, str) else v)
        if str(p).strip()))
    #: Browser origins allowed to call the API cross-site (``$SIMPLETUNER_CORS_ORIGINS``, comma-separated).
    #: Empty by default: CORS is off.
    cors_origins: tuple[str, ...] = attrs.field(default=(), converter=lambda v: tuple(
        o.strip().rstrip("/") for o in (v.split(",") if isinstance(v, str) else v) if o.strip()))
    #: Root for dataset folders and uploads (``$SIMPLETUNER_DATASETS_DIR``, else ``home/datasets``); created on
    #: first use. Every dataset path the API accepts must resolve inside it.
    datasets_dir: Path = attrs.field(
        default=attrs.Factory(lambda self: self.home / "datasets", takes_self=True),
        converter=lambda v: Path(v).expanduser())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Defaults, then ``SIMPLETUNER_HOST``/``_PORT``/``_HOME``/``_TRUST_PROXY``/``_DATASETS_DIR``/``_CORS_ORIGINS``,
        then ``overrides``."""
        defaults: dict[str, Callable[[Mapping[str, str] | None], Any]] = {
            "host": default_host,
            "port": default_port,
            "home": default_home,
            "trust_proxy": default_trust_proxy,
        }
        env = os.environ if environ is None else environ
        for key in ("max_body_bytes", "max_dataloader_bytes", "max_upload_bytes", "max_upload_file_bytes",
                    "max_extracted_bytes"):
            raw = env.get(f"SIMPLETUNER_{key.upper()}")
            if raw and key not in overrides:
                overrides = {**overrides, key: raw}
        if env.get("SIMPLETUNER_ALLOWED_ROOTS") and "allowed_roots" not in overrides:
            overrides = {**overrides, "allowed_roots": env["SIMPLETUNER_ALLOWED_ROOTS"]}
        if env.get("SIMPLETUNER_CORS_ORIGINS") and "cors_origins" not in overrides:
            overrides = {**overrides, "cors_origins": env["SIMPLETUNER_CORS_ORIGINS"]}
        if env.get("SIMPLETUNER_DATASETS_DIR") and "datasets_dir" not in overrides:
            overrides = {**overrides, "datasets_dir": env["SIMPLETUNER_DATASETS_DIR"]}
        values = {key: read(environ) for key, read in defaults.items() if key not in overrides}
        return cls(**values, **overrides)

    @property
    def job_roots(self) -> tuple[Path, ...]:
        """Where non-admin jobs may put and read files: the state directory, the datasets root, the extras."""
        return (self.home, self.datasets_dir, *self.allowed_roots)
