"""The MQTT password: never required in the config file.

Where it comes from, first match wins:

1. EDGEWATCH_BROKER__PASSWORD (already applied by `edge_config.env`, taken verbatim)
2. broker.password in the file (works; a file readable by other users is a poor place for it)
3. broker.password_file
4. `edgewatch-mqtt-password` in $CREDENTIALS_DIRECTORY (systemd LoadCredential=)
5. `edgewatch-mqtt-password` in /run/secrets (Docker and Kubernetes secrets)

Setting both 2 and 3 is refused: one of them would be silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import SecretStr

from edge_config.problems import Problem
from edge_config.schema import BrokerConfig

__all__ = ["SECRET_NAME", "default_secret_dirs", "resolve_password"]

SECRET_NAME = "edgewatch-mqtt-password"
_MAX_BYTES = 4096


def default_secret_dirs(environ: Mapping[str, str]) -> list[Path]:
    """$CREDENTIALS_DIRECTORY (when set), then /run/secrets."""
    dirs = [Path(environ["CREDENTIALS_DIRECTORY"])] if environ.get("CREDENTIALS_DIRECTORY") else []
    return [*dirs, Path("/run/secrets")]


def _read_secret(path: Path) -> str:
    """The file's text minus one trailing newline (editors and `echo` add one)."""
    data = path.read_bytes()
    if len(data) > _MAX_BYTES:
        raise ValueError(f"{len(data)} bytes is too long for a password file")
    text = data.decode("utf-8")
    text = text.removesuffix("\n")
    text = text.removesuffix("\r")
    if not text:
        raise ValueError("the file is empty")
    return text


def resolve_password(
    broker: BrokerConfig, *, from_env: bool, secret_dirs: Sequence[Path]
) -> tuple[BrokerConfig, list[Problem]]:
    """Fill broker.password from the first source that has one; problems name the source."""
    if broker.password is not None and from_env:
        return broker, []
    if broker.password is not None and broker.password_file is not None:
        return broker, [
            Problem(("broker", "password_file"), "broker.password and broker.password_file are both set", "keep one")
        ]
    if broker.password is not None:
        return broker, []
    if broker.password_file is not None:
        try:
            secret = _read_secret(broker.password_file)
        except FileNotFoundError:
            return broker, [Problem(("broker", "password_file"), f"{broker.password_file} does not exist")]
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return broker, [Problem(("broker", "password_file"), f"cannot read {broker.password_file}: {why}")]
        return broker.model_copy(update={"password": SecretStr(secret)}), []
    for directory in secret_dirs:
        path = directory / SECRET_NAME
        try:
            secret = _read_secret(path)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return broker, [Problem(("broker", "password"), f"cannot read {path}: {why}")]
        return broker.model_copy(update={"password": SecretStr(secret)}), []
    return broker, []
