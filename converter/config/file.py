"""Read a YAML config file: bounded YAML, `${ENV}` substitution, spec paths relative to the file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from converter.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MAX_EXPANDED_VALUES = 100_000  # YAML aliases: a config is small, a billion laughs is not


def read_config_file(config_file: str) -> dict[str, Any]:
    """The file's mapping, with `${ENV}` substituted and `spec:` paths made relative to the file.

    Raises:
        ConfigError: the file cannot be read, is not YAML, expands too far, is not a mapping, or
            names an environment variable that is not set (and has no default).
    """
    path = Path(config_file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{config_file}: no such config file", source=config_file) from exc
    except OSError as exc:
        raise ConfigError(f"{config_file}: cannot be read ({exc.strerror})", source=config_file) from exc
    import yaml

    try:
        loaded = yaml.load(text, Loader=_loader())  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{config_file}: is not valid YAML{where}", source=config_file) from exc
    if loaded is None:
        loaded = {}
    from converter.errors import SpecError
    from converter.spec.load import check_expansion

    try:
        check_expansion(loaded, source=config_file, limit=MAX_EXPANDED_VALUES, skip_extensions=False)
    except SpecError as exc:
        raise ConfigError(str(exc), source=config_file) from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{config_file}: the top level must be a mapping of keys", source=config_file)
    raw = substitute_env(loaded, source=config_file)
    if isinstance(raw.get("spec"), str):
        raw["spec"] = _relative_to(raw["spec"], path.parent)
    for entry in raw.get("sources") or ():
        if isinstance(entry, dict) and isinstance(entry.get("spec"), str):
            entry["spec"] = _relative_to(entry["spec"], path.parent)
    return dict(raw)


def _loader() -> Any:
    """PyYAML's safe loader with YAML 1.2 (core schema) booleans and numbers.

    YAML 1.1 reads on/off/yes/no/y/n as booleans, `010` as 8 and `12:30` as 750, so
    `access_log: off` arrived as False and a header value `12:30` as a number. Here only true/false
    (any case) are booleans and only plain decimal (or 0x) numbers are numbers; the rest stays
    text. Settings typed as booleans or numbers still take that text ("off", "yes", "010").
    """
    import yaml

    replaced = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}

    class Loader(yaml.SafeLoader):
        yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML's own class attribute, replaced whole
            first: [(tag, regexp) for tag, regexp in resolvers if tag not in replaced]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

    for tag, pattern, first in _CORE_SCHEMA:
        Loader.add_implicit_resolver(tag, re.compile(pattern), list(first))
    return Loader


_CORE_SCHEMA = (  # YAML 1.2.2 §10.3.2, in the order they are tried
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
                                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789"),
)  # (a leading zero, `010`, is text: YAML 1.1 reads it as octal 8, 1.2 as 10; as text either can be meant)


def substitute_env(value: Any, *, key: str = "", source: str = "<config>") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a parsed YAML tree."""
    if isinstance(value, str):
        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is None or (found == "" and default is not None):
                if default is None:
                    raise ConfigError(f"{source}: {key or 'value'}: environment variable {name} is not set "
                                      f"(use ${{{name}:-default}} for a default)", key=key, source=source)
                return default
            return found
        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: substitute_env(v, key=f"{key}.{k}" if key else str(k), source=source) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, key=f"{key}[{i}]", source=source) for i, v in enumerate(value)]
    return value


def _relative_to(spec: str, base: Path) -> str:
    if "://" in spec or Path(spec).is_absolute():
        return spec
    candidate = base / spec
    return str(candidate) if candidate.exists() else spec
