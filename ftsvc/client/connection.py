"""Which server the client commands talk to, and with which API key.

The base URL: `--base-url`, else `FTSVC_BASE_URL`, else `base_url` in the config file,
else the embedded service's http://127.0.0.1:8000/v1. The key: `--api-key`, else
`FTSVC_API_KEY`, else `api_key` in the config file, else, for a server on this machine
only, the key the embedded mode keeps in `$FTSVC_DATA_DIR/local-api-key` (`var/` by
default). The config file is TOML: `$FTSVC_CONFIG`, else `$XDG_CONFIG_HOME/ftsvc/config.toml`
(`~/.config/ftsvc/config.toml`)."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ftsvc.client.errors import ClientError

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
CONFIG_KEYS = ("base_url", "api_key")


@dataclass(frozen=True)
class Connection:
    base_url: str
    api_key: str
    key_source: str  # where the key came from, named in the message of a refused key


def config_path() -> Path:
    explicit = os.environ.get("FTSVC_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "ftsvc" / "config.toml"


def read_config(path: Path) -> dict[str, str]:
    """The config file's settings; none when it does not exist (a file set with
    FTSVC_CONFIG must exist)."""
    if not path.exists() and "FTSVC_CONFIG" not in os.environ:
        return {}
    try:
        values: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ClientError(f"cannot read the config file {path}: {exc}") from exc
    unknown = sorted(set(values) - set(CONFIG_KEYS))
    if unknown:
        raise ClientError(f"the config file {path} has unknown settings {unknown}; it takes {list(CONFIG_KEYS)}")
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise ClientError(f"the config file {path}: {name} must be a non-empty string")
    return values


def is_this_machine(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_key_file() -> Path | None:
    """The key file of the embedded service run from here (its data directory as the
    service's own settings say); None when those settings are not valid."""
    from pydantic import ValidationError

    from core.auth import LOCAL_KEY_FILE
    from core.settings import get_settings

    try:
        return get_settings().data_dir / LOCAL_KEY_FILE
    except ValidationError:
        return None


def connection(base_url: str | None, api_key: str | None) -> Connection:
    """The server and key of a command, from its flags, the environment and the config file."""
    path = config_path()
    config = read_config(path)
    url = base_url or os.environ.get("FTSVC_BASE_URL") or config.get("base_url") or DEFAULT_BASE_URL
    if urlsplit(url).scheme not in ("http", "https"):
        raise ClientError(f"the base URL {url!r} is not an http(s) URL, e.g. {DEFAULT_BASE_URL}")
    sources = (
        (api_key, "--api-key"),
        (os.environ.get("FTSVC_API_KEY"), "FTSVC_API_KEY"),
        (config.get("api_key"), f"the config file {path}"),
    )
    for key, source in sources:
        if key:
            return Connection(url, key, source)
    # Only a server on this machine gets the local key: it must never travel elsewhere.
    key_file = local_key_file() if is_this_machine(url) else None
    if key_file is not None and key_file.is_file():
        return Connection(url, key_file.read_text().strip(), str(key_file))
    raise ClientError(
        f"no API key for {url}: pass --api-key, set FTSVC_API_KEY, or set api_key in {path}"
        + (f" (or run from where the embedded service keeps {key_file})" if key_file is not None else "")
    )
