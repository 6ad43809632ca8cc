"""Check command-line overrides against the config before Hydra composes it.

Hydra answers a misspelt key with "Key 'max_epoch' is not in struct ... To append to your config
use +trainer.max_epoch=1", and that `+` would add a setting nothing reads. Here a misspelt key
gets one message naming the valid keys of its group (and the closest one); a `+key` is taken
only where something reads it: an argument that the node's `_target_` accepts, an entry inside
an argument (a label map), or a new object in a collection of them (callbacks, loggers).
"""

from __future__ import annotations

import difflib
import inspect
import itertools
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from batteryct.errors import ConfigError

TARGET = "_target_"
_ABSENT = object()


def check_overrides(config_dir: Path, config_name: str, overrides: Sequence[str]) -> None:
    """Raise ConfigError for the first override of a key that the composed config lacks.

    Config group choices (`trainer=ddp`, also swept: `experiment=a,b`) are composed first and
    every key override (`trainer.max_epochs=3`, `+trainer.plugins=[...]`) is checked against
    each composition. Syntax errors, unknown group options and `hydra.*` keys are left to Hydra,
    which reports them itself.
    """
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        try:
            parsed = OverridesParser.create(config_loader=loader).parse_overrides(list(overrides))
        except HydraException:
            return
        parsed = [o for o in parsed if not o.is_hydra_override()]
        groups = [o for o in parsed if o.package is not None or _is_group(loader, o)]
        keys = [o for o in parsed if o not in groups and not o.is_delete()]
        if not keys:
            return
        root_groups = sorted(set(loader.list_groups("")) - {"hydra"})
        try:
            choices = [_group_choices(o) for o in groups]
        except HydraException:
            return
        for combination in itertools.product(*choices):
            try:
                cfg = compose(config_name, overrides=list(combination))
            except Exception:  # a bad group choice: Hydra names it when it composes
                return
            for override in keys:
                _check_key(cfg, override, config_name, root_groups)


def _is_group(loader: object, override: Override) -> bool:
    return bool(loader.get_group_options(override.key_or_group))  # type: ignore[attr-defined]


def _group_choices(override: Override) -> list[str]:
    """The single-choice override lines of a group override (one per choice of a sweep)."""
    if not override.is_sweep_override():
        return [str(override.input_line)]
    key = override.get_key_element()
    return [f"{key}={choice}" for choice in override.sweep_string_iterator()]


def _check_key(cfg: DictConfig, override: Override, config_name: str, groups: list[str]) -> None:
    key = override.key_or_group
    parent_key, _, name = key.rpartition(".")
    parent = _select(cfg, parent_key)
    if _has(parent, name):
        return
    adding = override.is_add() or override.is_force_add()
    if adding and parent is not None and _reads_new_key(cfg, parent_key, name, override.value()):
        return
    line = override.input_line
    # The nearest level of the key that exists: its keys are the valid ones.
    while parent is None:
        value = OmegaConf.select(cfg, parent_key, default=_ABSENT, throw_on_missing=False)
        if value is not _ABSENT:
            raise ConfigError(f"`{line}`: '{parent_key}' is a single value ({value}), not a group")
        parent_key, _, name = parent_key.rpartition(".")
        parent = _select(cfg, parent_key)
    if isinstance(parent, ListConfig):
        raise ConfigError(f"`{line}`: '{parent_key}' is a list of {len(parent)} values")
    where = f"'{parent_key}'" if parent_key else "the top level"
    valid = [str(k) for k in parent] if isinstance(parent, DictConfig) else []
    valid = sorted(k for k in valid if not (k.startswith("_") and k.endswith("_")))
    message = f"`{line}`: {where} of {config_name}.yaml has no key '{name}'"
    message += ", and nothing would read it. " if adding else ". "
    message += f"Valid keys of {where}: {', '.join(valid)}"
    if not parent_key:
        message += f"; config groups: {', '.join(groups)}"
    accepted = _target_parameters(parent) if isinstance(parent, DictConfig) else set()
    close = difflib.get_close_matches(name, valid + ([] if parent_key else groups), n=1)
    if not adding and accepted is not None and name in accepted:
        message += f". {parent[TARGET]} also takes '{name}': add it with +{line}"
    elif close:
        message += f". Did you mean '{close[0]}'?"
    raise ConfigError(message)


def _select(cfg: DictConfig, key: str) -> DictConfig | ListConfig | None:
    """The config node at `key` ("" is the root), or None if there is none."""
    if not key:
        return cfg
    node = OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=False)
    return node if isinstance(node, DictConfig | ListConfig) else None


def _has(node: DictConfig | ListConfig | None, name: str) -> bool:
    if isinstance(node, DictConfig):
        return name in node.keys()  # noqa: SIM118 (`in node` is False for a '???' value)
    if isinstance(node, ListConfig):
        return name.isdigit() and int(name) < len(node)
    return False


def _reads_new_key(cfg: DictConfig, parent_key: str, name: str, value: object) -> bool:
    """Whether a new key `name` under `parent_key` would be read by anything."""
    parent = _select(cfg, parent_key)
    if not isinstance(parent, DictConfig):
        return False
    if TARGET in parent:
        accepted = _target_parameters(parent)
        return accepted is None or name in accepted or (name.startswith("_") and name.endswith("_"))
    ancestors = parent_key.split(".")
    for depth in range(len(ancestors) - 1, 0, -1):
        ancestor = _select(cfg, ".".join(ancestors[:depth]))
        if isinstance(ancestor, DictConfig) and TARGET in ancestor:
            return True  # an entry of a dict argument (a label map's mapping)
    children = OmegaConf.to_container(parent, resolve=False).values()
    collection = all(c is None or (isinstance(c, dict) and TARGET in c) for c in children)
    return collection and isinstance(value, dict) and TARGET in value


def _target_parameters(node: DictConfig) -> set[str] | None:
    """The keyword arguments the node's `_target_` takes; None if it takes any (or is unknown)."""
    if TARGET not in node:
        return set()
    try:
        signature = inspect.signature(get_object(str(node[TARGET])))
    except Exception:  # not importable here: instantiation will say why
        return None
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}
