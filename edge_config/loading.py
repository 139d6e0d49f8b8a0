"""Load one gateway config: YAML → environment overrides → schema → secrets → file checks.

Every problem is collected (not only the first) and raised as one `ConfigError` whose
message has one line per problem, sorted by position:

    gateway.yaml:12:5: runtime.max_bacth: unknown key 'max_bacth' (did you mean 'max_batch'?)
    $EDGEWATCH_BROKER__PORT: broker.port: Input should be a valid integer, got 'x'

Relative paths (models.*.path, broker.password_file, broker.tls.*, runtime.checkpoint_path,
trust.public_keys)
are relative to the config file's folder, wherever they were set, so that a config works
the same from any working directory (systemd starts services in /).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from edge_config.checks import file_problems
from edge_config.env import EnvOverlay, apply_env
from edge_config.errors import ConfigError
from edge_config.problems import Problem, dotted
from edge_config.pydantic_errors import problems_from_validation_error
from edge_config.schema import DEFER_CONSISTENCY_CHECKS, GatewayConfig, consistency_problems
from edge_config.secrets import default_secret_dirs, resolve_password
from edge_config.yaml_source import YamlSource, YamlSyntaxError, parse_yaml

__all__ = ["load_config", "resolve_paths"]


def _under(base: Path, path: Path | None) -> Path | None:
    if path is None:
        return None
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def resolve_paths(config: GatewayConfig, base: Path) -> GatewayConfig:
    """A copy of `config` whose relative paths are made relative to `base` (the file's folder)."""
    broker = config.broker
    tls = broker.tls
    if tls is not None:
        tls = tls.model_copy(
            update={key: _under(base, getattr(tls, key)) for key in ("ca_file", "cert_file", "key_file")}
        )
    broker = broker.model_copy(update={"tls": tls, "password_file": _under(base, broker.password_file)})
    models = {name: m.model_copy(update={"path": _under(base, m.path)}) for name, m in config.models.items()}
    runtime = config.runtime.model_copy(update={"checkpoint_path": _under(base, config.runtime.checkpoint_path)})
    keys = [p if p.is_absolute() else base / p for p in config.trust.public_keys]
    trust = config.trust.model_copy(update={"public_keys": keys})
    return config.model_copy(update={"broker": broker, "models": models, "runtime": runtime, "trust": trust})


def _format(source: YamlSource, overlay: EnvOverlay, problems: list[Problem]) -> str:
    lines: list[tuple[tuple[int, int, str], str]] = []
    for p in problems:
        origin = p.source or overlay.origin(p.loc)
        tail = (f"{dotted(p.loc)}: " if p.loc else "") + p.message + (f" ({p.hint})" if p.hint else "")
        if origin:
            lines.append(((0, 0, origin), f"{origin}: {tail}"))  # environment first: it overrides the file
        else:
            pos = source.position(p.loc, at_key=p.at_key)
            lines.append(((pos.line, pos.column, ""), f"{source.path}:{pos.line}:{pos.column}: {tail}"))
    return "\n".join(line for _, line in sorted(lines, key=lambda item: item[0]))


def load_config(
    path: Path | str,
    *,
    environ: Mapping[str, str] | None = None,
    check_files: bool = True,
    secret_dirs: Sequence[Path] | None = None,
) -> GatewayConfig:
    """Read, override, validate and check the config at `path`; raise ConfigError listing every problem.

    `environ` defaults to os.environ. `check_files=False` skips everything that reads other
    files (artifacts, secrets, TLS files, the checkpoint folder): for validating a config
    away from the gateway it is meant for. `secret_dirs` defaults to $CREDENTIALS_DIRECTORY
    and /run/secrets.
    """
    path = Path(path)
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read the config: {why}") from None
    source = parse_yaml(path, text)
    if isinstance(source, YamlSyntaxError):
        raise ConfigError(f"{path}:{source.position.line}:{source.position.column}: {source.message}")
    overlay = apply_env(source.data, environ, list(GatewayConfig.model_fields))
    problems = [*source.duplicates, *overlay.problems]
    if source.data is not None and not isinstance(source.data, dict):
        problems.append(
            Problem((), "the file must be a mapping of sections", f"sections: {', '.join(GatewayConfig.model_fields)}")
        )
        raise ConfigError(_format(source, overlay, problems))
    try:
        config = GatewayConfig.model_validate(overlay.data, context={DEFER_CONSISTENCY_CHECKS: True})
    except ValidationError as exc:
        problems.extend(problems_from_validation_error(GatewayConfig, exc, overlay.data))
        raise ConfigError(_format(source, overlay, problems)) from None
    problems.extend(consistency_problems(config))
    config = resolve_paths(config, path.absolute().parent)
    if check_files:
        dirs = default_secret_dirs(environ) if secret_dirs is None else secret_dirs
        broker, found = resolve_password(
            config.broker, from_env=("broker", "password") in overlay.origins, secret_dirs=dirs
        )
        config = config.model_copy(update={"broker": broker})
        problems.extend([*found, *file_problems(config)])
    if problems:
        raise ConfigError(_format(source, overlay, problems))
    return config
