"""Settings of ``evqueue-api``: the original's ``evqueue.api.conf`` files, then the environment.

Files are read in order, later ones overriding earlier ones: ``/etc/evqueue.api.conf``, then
``~/.evqueue.api.conf``, with the daemon's configuration syntax (``key = value``, ``#``
comments, quotes, ``{VAR}`` environment substitution; unknown keys are an error). Then
``$EVQUEUE_SERVERS`` (a comma-separated URL list) overrides ``api.connect``; command line
options override everything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from evqueue.client.federation import SERVERS_ENV
from evqueue.config import BOOLEANS, VAR_RE, ConfigError, parse_line

SYSTEM_FILE = "/etc/evqueue.api.conf"
USER_FILE = "~/.evqueue.api.conf"


@dataclass(frozen=True)
class ApiSettings:
    """Effective values of the ``api.*`` keys (defaults are the original's)."""

    connect: str = "tcp://localhost:5000"
    user: str = ""
    password: str = ""
    noformat: bool = False
    xpath: str = ""


def read_file(path: Path, settings: ApiSettings, environ: Mapping[str, str]) -> ApiSettings:
    """``settings`` overridden by the keys of one file; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ConfigError(f"Unable to open configuration file {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: invalid UTF-8") from e
    values: dict[str, object] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        try:
            entry = parse_line(line.removesuffix("\r"), number)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e.message}") from None
        if entry is None:
            continue
        key, value = entry
        field = key.removeprefix("api.")
        if not key.startswith("api.") or field not in ApiSettings.__dataclass_fields__:
            raise ConfigError(f"{path}: Unknown configuration entry : {key}")
        value = VAR_RE.sub(lambda m: environ.get(m.group(1), m.group(0)), value)
        if field == "noformat":
            if value not in BOOLEANS:
                raise ConfigError(f"{path}: api.noformat must be yes or no, not {value!r}")
            values[field] = BOOLEANS[value]
        else:
            values[field] = value
    return replace(settings, **values)


def load(
    files: Sequence[str] = (SYSTEM_FILE, USER_FILE), environ: Mapping[str, str] = os.environ
) -> ApiSettings:
    """The settings from the files that exist, then ``$EVQUEUE_SERVERS``."""
    settings = ApiSettings()
    for name in files:
        path = Path(os.path.expanduser(name))
        if path.exists():
            settings = read_file(path, settings, environ)
    servers = environ.get(SERVERS_ENV, "").strip()
    if servers:
        settings = replace(settings, connect=servers)
    return settings
