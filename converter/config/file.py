"""Read a YAML config file: bounded YAML, `${ENV}` substitution, spec paths relative to the file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from converter.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# decK's own spelling of an environment variable: ${{ env "DECK_NAME" }}
_DECK_ENV_REF = re.compile(r"\$\{\{\s*env\s+\"([A-Za-z_][A-Za-z0-9_]*)\"\s*\}\}")
_DOLLAR_NAME = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
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
        loaded = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKeyError as exc:
        raise ConfigError(f"{config_file}: {exc}", source=config_file) from exc
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
    loaded, aliases = _kong_docs_example(loaded)
    raw = substitute_env(loaded, source=config_file, aliases=aliases)
    if isinstance(raw.get("spec"), str):
        raw["spec"] = _relative_to(raw["spec"], path.parent)
    for entry in raw.get("sources") or ():
        if isinstance(entry, dict) and isinstance(entry.get("spec"), str):
            entry["spec"] = _relative_to(entry["spec"], path.parent)
    return dict(raw)


class _DuplicateKeyError(Exception):
    """A key given twice in one mapping (YAML keeps the last one silently)."""


_MERGED_KEYS = ("entities", "variables")  # Kong's docs blocks, pasted one after the other


def _loader() -> Any:
    """PyYAML's safe loader with YAML 1.2 (core schema) booleans and numbers, refusing a key given
    twice (except Kong docs blocks pasted in a row, whose `entities:` and `variables:` are merged).

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

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            mapping: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                value = self.construct_object(value_node, deep=True)
                if key in mapping:
                    if key in _MERGED_KEYS and isinstance(mapping[key], dict) and isinstance(value, dict):
                        mapping[key] = _merged(mapping[key], value)
                        continue
                    raise _DuplicateKeyError(f"line {key_node.start_mark.line + 1}: {key!r} is given twice in one "
                                             "mapping (only the last would count)")
                mapping[key] = value
            return mapping

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, Loader.construct_mapping)
    for tag, pattern, first in _CORE_SCHEMA:
        Loader.add_implicit_resolver(tag, re.compile(pattern), list(first))
    return Loader


_CORE_SCHEMA = (  # YAML 1.2.2 §10.3.2, in the order they are tried
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
                                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789"),
)  # (a leading zero, `010`, is text: YAML 1.1 reads it as octal 8, 1.2 as 10; as text either can be meant)


def _merged(first: dict[Any, Any], second: dict[Any, Any]) -> dict[Any, Any]:
    merged = dict(first)
    for key, value in second.items():
        if isinstance(merged.get(key), list) and isinstance(value, list):
            merged[key] = merged[key] + value
        elif isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _kong_docs_example(loaded: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Kong's docs wrap a decK file in `entities:` and name its placeholders under `variables:`
    (`mcp_auth_url: {value: $MCP_AUTH_URL}`): read the entities as the file, and `${mcp_auth_url}`
    as the environment variable MCP_AUTH_URL."""
    aliases: dict[str, str] = {}
    variables = loaded.get("variables")
    if isinstance(loaded.get("entities"), dict) and set(loaded) <= {"entities", "variables"}:
        loaded = dict(loaded["entities"])
    elif isinstance(variables, dict) and "plugins" in loaded:
        loaded = {k: v for k, v in loaded.items() if k != "variables"}
    else:
        return loaded, aliases
    for name, spec in (variables or {}).items():
        value = spec.get("value") if isinstance(spec, dict) else None
        match = _DOLLAR_NAME.match(value) if isinstance(value, str) else None
        if match:
            aliases[str(name)] = match.group(1)
    return loaded, aliases


def substitute_env(value: Any, *, key: str = "", source: str = "<config>",
                   aliases: dict[str, str] | None = None) -> Any:
    """Replace `${VAR}`, `${VAR:-default}` (and decK's `${{ env "VAR" }}`) in every string of a parsed
    YAML tree; `aliases` maps a placeholder name to the variable it stands for."""
    if isinstance(value, str):
        value = _DECK_ENV_REF.sub(lambda m: "${" + m.group(1) + "}", value)

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            name = (aliases or {}).get(name, name)
            found = os.environ.get(name)
            if found is None or (found == "" and default is not None):
                if default is None:
                    raise ConfigError(f"{source}: {key or 'value'}: environment variable {name} is not set "
                                      f"(use ${{{name}:-default}} for a default)", key=key, source=source)
                return default
            return found
        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: substitute_env(v, key=f"{key}.{k}" if key else str(k), source=source, aliases=aliases)
                for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, key=f"{key}[{i}]", source=source, aliases=aliases) for i, v in enumerate(value)]
    return value


def _relative_to(spec: str, base: Path) -> str:
    if "://" in spec or Path(spec).is_absolute():
        return spec
    candidate = base / spec
    return str(candidate) if candidate.exists() else spec
