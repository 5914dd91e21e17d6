"""Reading the config file: YAML -> key screen -> models, every problem reported at once.

The config may also be a directory of YAML files and ``PATRONI_*`` variables (``environment.py``).

YAML is parsed by PyYAML's SafeLoader (the loader ``yaml.safe_load`` uses: no Python objects), extended
only to refuse a key written twice in one mapping: YAML itself would keep the last one silently, and two
``postgresql:`` sections in one file are a mistake worth stopping for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from raftpg.config.environment import (
    CONFIGURATION,
    config_files,
    consumed_names,
    environment_config,
    patch,
    variables,
)
from raftpg.config.errors import ConfigError, line, validation_lines
from raftpg.config.fields import FrozenDict
from raftpg.config.schema import DCS_KINDS, Config, dcs_choice, structure_problems
from raftpg.config.screen import screen

_BOOL = TypeAdapter(bool)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that raises on duplicate mapping keys."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # an unhashable key: construct_mapping reports it
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first defined on line {first.line + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_error(path: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"{problem} ({context})" if context else problem
    if mark is None:
        return f"{path}: {message}"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: {message}"


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config: the YAML file at ``path`` (or every YAML file of the directory
    ``path``, merged in name order), overridden by ``PATRONI_*``/``RAFTPG_*`` variables of ``environ``
    (default: ``os.environ``); with no ``path``, ``PATRONI_CONFIGURATION`` or those variables alone (see
    ``environment.py``). Raises ConfigError (see its docstring).

    The returned Config's ``environ`` holds the variables it read, so a reload can use the same ones
    after the agent dropped them from its own environment.
    """
    env = os.environ if environ is None else environ
    documents: dict[str, dict[str, Any]] = {}
    if path is None:
        data, source, files = _from_environment(env)
    else:
        source = os.fspath(path)
        files = config_files(source)
        if not files:
            raise ConfigError([f"{source}: the directory holds no *.yml or *.yaml file"], source)
        documents = {name: _read_yaml_file(name) for name in files}  # each is a copy: patch() may change it
        data = {}
        for document in documents.values():
            patch(data, document)
        patch(data, environment_config(env))
    config = parse_config(data, source)
    exposed = [w for w in (_exposed_secrets(name, documents[name]) for name in files) if w]
    config._warnings = (*config._warnings, *exposed)
    config._environ = FrozenDict({name: env[name] for name in consumed_names(env)})
    return config


def _from_environment(env: Mapping[str, str]) -> tuple[dict[str, Any], str, list[str]]:
    text = variables(env).get(CONFIGURATION)
    if text is not None:
        data = _parse_yaml(text, "PATRONI_CONFIGURATION")
        if not isinstance(data, dict):
            raise ConfigError(["PATRONI_CONFIGURATION: must hold the config as a YAML mapping"], "PATRONI_CONFIGURATION")
        return data, "PATRONI_CONFIGURATION", []
    data = environment_config(env)
    if not data:
        raise ConfigError(["no config: give a config file or directory, or set PATRONI_CONFIGURATION or "
                           "PATRONI_* (RAFTPG_*) variables"], "<environment>")
    return data, "<environment>", []


def _read_yaml_file(source: str) -> dict[str, Any]:
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{source}: cannot read the config file: {exc}"], source) from None
    data = _parse_yaml(text, source)
    if data is None:
        raise ConfigError([f"{source}: config file is empty"], source)
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping of keys, got {type(data).__name__}"], source)
    return data


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_error(source, exc)], source) from None


def _exposed_secrets(source: str, data: Any) -> str | None:
    """A warning when a file holding passwords or tokens can be read by other users of the machine: the
    Raft password, the REST credentials and the superuser's password each grant code execution as the
    agent's user (SECURITY.md). A warning, not an error, so a Patroni config runs unchanged."""
    try:
        mode = os.stat(source).st_mode & 0o777
    except OSError:
        return None
    if not mode & 0o077 or not _holds_secret(data):
        return None
    return f"{source}: holds passwords but is readable by other users (mode {mode:04o}): chmod 600 {source}"


def _holds_secret(value: Any, path: tuple[str, ...] = ()) -> bool:
    if isinstance(value, Mapping):
        return any(_holds_secret(v, (*path, str(k))) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_secret(v, path) for v in value)
    return value not in (None, "") and bool(path) and path[-1].lower() in ("password", "token")


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate a config document already parsed from YAML (or built in code, as tests do).

    Raises ConfigError listing every problem found, one ``key.path: message`` per line. The returned
    Config's ``warnings`` name each key Patroni knows that raftpg ignores.
    """
    if not isinstance(data, Mapping):
        raise ConfigError([f"{source}: the top level must be a mapping of keys, got {type(data).__name__}"], source)
    warnings: list[str] = []
    document = dict(data)
    if _is_witness(document) and "postgresql" in document:
        del document["postgresql"]
        warnings.append("postgresql: ignored on a witness node (witness: true)")
    dropped, dcs_warnings, dcs_errors = dcs_choice(document)
    for key in dropped:
        del document[key]
    warnings += dcs_warnings
    screened = screen(Config, document)
    present = [kind for kind in DCS_KINDS if screened.data.get(kind) is not None]
    structure = structure_problems(present, _is_witness(document), screened.data.get("postgresql") is not None)
    if dcs_errors:  # they say what to do instead of "one of raft, etcd3, consul is required"
        structure = dcs_errors + [(path, message) for path, message in structure if path]
    errors = screened.errors + [line(path, message) for path, message in structure]
    config = None
    try:
        config = Config.model_validate(screened.data)
    except ValidationError as exc:
        errors.extend(validation_lines(exc))
    if dcs_errors:  # the model repeats the generic rule that dcs_errors replace
        errors = [e for e in errors if e != line(*structure_problems([], True, False)[0])]
    if errors or config is None:
        raise ConfigError(list(dict.fromkeys(errors)), source)
    config._warnings = tuple(warnings + screened.warnings)
    return config


def _is_witness(document: Mapping[str, Any]) -> bool:
    try:
        return _BOOL.validate_python(document.get("witness", False)) is True
    except ValidationError:
        return False  # reported by the model
