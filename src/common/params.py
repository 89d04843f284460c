"""Checks a stage's parameters against the keys and types its YAML defaults declare.

A stage's namespace (``cfg.<stage>``) is checked before any work starts, by the stage itself
and by the chain runner for every stage of the chain: a key the defaults do not have is refused
with the closest known key ("unknown key pix2pix.n_epoch; did you mean pix2pix.n_epochs?"), and
a value whose type differs from its default's, or that lies outside the range a key allows, is
refused with the key named. Every problem found goes into one line.

The defaults are the schema: a key's type is its default value's (an integer default takes
integers, a float one any number, a string one any scalar, a list a list, a mapping a mapping);
a ``null`` or ``???`` default takes anything. The tables below add what a default cannot say:
nodes of free-form keys (extra Trainer or constructor arguments), keys that take several forms,
and ranges. Their keys are relative to the namespace (``data.batch_size``), so an alias stage
such as ``stylegan3_photo`` gets the rules of the module it runs; a range keyed by a bare name
(``batch_size``) applies at any depth.

Keys listed in ``WHOLE_VALUE_KEYS`` are replaced, not merged, by a command-line override: Hydra
cannot merge a mapping onto a list (``blend.weights={L0: 0.2, default: 0.7}`` over the default
list), so :func:`whole_value_overrides` turns ``key=value`` into ``~key +key=value``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.common.errors import UserError

# Nodes whose keys are free-form (passed on as keyword arguments, or named by the user).
OPEN_NODES = frozenset(
    {
        "trainer",
        "G",
        "D",
        "metrics_kwargs",
        "backbone.kwargs",
        "detector.options",
        "models",
        "entry_points",
        "tables",
    }
)


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``low <= v`` (``low < v`` when ``low_open``) and ``v <= high``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def violation(self, value: float) -> str | None:
        """Why ``value`` is out of range, or None."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None and value > self.high:
            return f"must be <= {_number(self.high)}"
        return None


POSITIVE = Range(0, low_open=True)
AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1)

# By key name (any depth) or by relative path.
RANGES: dict[str, Range] = {
    **dict.fromkeys(("batch_size", "batch", "max_concurrent", "rate_limit"), AT_LEAST_ONE),
    **dict.fromkeys(("size", "image_size", "resolution", "load_size", "crop_size"), AT_LEAST_ONE),
    **dict.fromkeys(("max_pixels", "max_download_bytes", "max_faces", "min_face"), AT_LEAST_ONE),
    **dict.fromkeys(("iterations", "checkpoint_every", "sample_every"), AT_LEAST_ONE),
    **dict.fromkeys(("metrics_every", "metrics_num", "grid_size", "grid_columns"), AT_LEAST_ONE),
    **dict.fromkeys(("lr", "glr", "dlr", "kimg", "snap", "rate_window_s", "eps"), POSITIVE),
    **dict.fromkeys(
        ("num_workers", "workers", "max_queue", "n_epochs", "n_epochs_decay"), NON_NEGATIVE
    ),
    **dict.fromkeys(("train_count", "test_count", "paired_count", "min_kept"), NON_NEGATIVE),
    **dict.fromkeys(("bad_fraction", "target_precision", "threshold", "feather"), FRACTION),
    **dict.fromkeys(("aug_p", "ada_target", "ema_rampup"), FRACTION),
    "val_fraction": Range(0, 1, low_open=True),
    **dict.fromkeys(("weight_decay", "sheet_pairs", "grid_samples", "wrong_shown"), NON_NEGATIVE),
    "project_steps": NON_NEGATIVE,
    "restyle_steps": AT_LEAST_ONE,
}

NUMBER = "a number"
LIST = "a list"
MAPPING = "a mapping"
STRING = "a string"
NULL = "null"
# Keys that take more than their default's form, by relative path: accepted kinds.
FORMS_BY_PATH: dict[str, tuple[str, ...]] = {
    "weights": (LIST, MAPPING, NUMBER),  # blend's schedule (not a nested *.weights file path)
}
# The same by key name, at any depth.
FORMS: dict[str, tuple[str, ...]] = {
    "seeds": (STRING, LIST, NUMBER),
    "preview_seeds": (STRING, LIST, NUMBER),
    # Thousands of images: fractions are fine (the smoke chain trains 1.6 kimg).
    "kimg": (NUMBER,),
    "snap": (NUMBER,),
    # One style degree, or a list of them for a sweep (cartoonize / toonify).
    "degree": (NUMBER, LIST),
    # null: e4e's progressive training off (every offset from the start).
    "progressive_start": (NUMBER, NULL),
}
# Keys a command-line override replaces whole (see the module docstring), as full keys.
WHOLE_VALUE_KEYS = frozenset({"blend.weights"})


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _kind(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        return LIST
    return MAPPING


def _show(value: Any) -> str:
    """``value`` as a user would type it, cut to 40 characters."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, list | dict):
        text = json.dumps(value)
    else:
        text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _flatten(node: Any, prefix: str) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{prefix}.{key}"
            yield from _flatten(value, f"{prefix}.{key}")


def closest_key(key: str, known: Sequence[str]) -> str | None:
    """The known key ``key`` most likely meant: by its path in the namespace, else by its name.

    Keys are full (``pix2pix.n_epoch``); the namespace is left out of the comparison so that
    a long shared prefix does not make unrelated keys look alike.
    """
    namespace = key.split(".", 1)[0] + "."
    relative = {k.removeprefix(namespace): k for k in known}
    match = difflib.get_close_matches(key.removeprefix(namespace), list(relative), 1, 0.7)
    if match:
        return relative[match[0]]
    leaves = {k.rsplit(".", 1)[-1]: k for k in sorted(known, key=len, reverse=True)}
    match = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(leaves), n=1, cutoff=0.8)
    return leaves[match[0]] if match else None


def unknown_key_message(key: str, known: Sequence[str]) -> str:
    """``unknown key K; did you mean M?`` (or the known keys beside it when nothing is close)."""
    suggestion = closest_key(key, known)
    if suggestion:
        return f"unknown key {key}; did you mean {suggestion}?"
    parent = key.rsplit(".", 1)[0]
    siblings = sorted(k.rsplit(".", 1)[-1] for k in known if k.rsplit(".", 1)[0] == parent)
    listed = ", ".join(siblings[:12]) + (", ..." if len(siblings) > 12 else "")
    return f"unknown key {key}; {parent} has: {listed}"


class _Checker:
    def __init__(self, namespace: str, known: list[str]) -> None:
        self.namespace = namespace
        self.known = known
        self.problems: list[str] = []

    def check(self, value: Any, default: Any, path: str) -> None:
        key = f"{self.namespace}.{path}" if path else self.namespace
        leaf = path.rsplit(".", 1)[-1]
        forms = FORMS_BY_PATH.get(path) or FORMS.get(leaf)
        if forms:
            if _kind(value) not in forms:
                self.problems.append(
                    f"{key}={_show(value)}: expected {' or '.join(forms)}, got {_kind(value)}"
                )
            else:
                self.check_range(value, path, key)
            return
        if default is None or default == "???":
            self.check_range(value, path, key)
            return
        if path in OPEN_NODES:
            if not isinstance(value, dict):
                self.problems.append(f"{key}={_show(value)}: expected a mapping")
            return
        if isinstance(default, dict):
            self.check_mapping(value, default, path, key)
        elif isinstance(default, list):
            self.check_list(value, default, key)
        else:
            problem = _scalar_problem(value, default)
            if problem:
                self.problems.append(f"{key}={_show(value)}: {problem} (default {_show(default)})")
            else:
                self.check_range(value, path, key)

    def check_mapping(self, value: Any, default: dict, path: str, key: str) -> None:
        if not isinstance(value, dict):
            self.problems.append(f"{key}={_show(value)}: expected a mapping, got {_kind(value)}")
            return
        for name, item in value.items():
            child = f"{path}.{name}" if path else str(name)
            if name in default:
                self.check(item, default[name], child)
            else:
                self.problems.append(unknown_key_message(f"{key}.{name}", self.known))

    def check_list(self, value: Any, default: list, key: str) -> None:
        if not isinstance(value, list):
            self.problems.append(f"{key}={_show(value)}: expected a list, got {_kind(value)}")
            return
        kinds = {_kind(d) for d in default}
        if len(kinds) != 1 or kinds == {"null"}:
            return
        (kind,) = kinds
        for index, item in enumerate(value):
            if _kind(item) != kind:
                self.problems.append(f"{key}[{index}]={_show(item)}: expected {kind}")

    def check_range(self, value: Any, path: str, key: str) -> None:
        rule = RANGES.get(path) or RANGES.get(path.rsplit(".", 1)[-1])
        if rule is None or isinstance(value, bool) or not isinstance(value, int | float):
            return
        problem = rule.violation(value)
        if problem:
            self.problems.append(f"{key}={_show(value)}: {problem}")


def _scalar_problem(value: Any, default: Any) -> str | None:
    """Why ``value`` cannot stand where ``default`` stands, or None."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(default, int):
        return None if type(value) is int else "expected an integer"
    if isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "expected a number"
    if isinstance(default, str):
        ok = isinstance(value, str | int | float) and not isinstance(value, bool)
        return None if ok else f"expected a string, got {_kind(value)}"
    return None


def _container(node: Any, key: str) -> Any:
    if not OmegaConf.is_config(node):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as err:
        full_key = getattr(err, "full_key", None) or key
        raise UserError(f"config key '{full_key}' does not resolve: {err.msg}") from None


def check_params(cfg: DictConfig, namespace: str, defaults: DictConfig) -> None:
    """Refuse unknown keys and ill-typed or out-of-range values in ``cfg.<namespace>``.

    ``defaults`` is the same config composed with no overrides. Raises one ``UserError`` naming
    every problem; a namespace the defaults lack (a stage without parameters) is not checked.
    """
    default = _container(OmegaConf.select(defaults, namespace, default=None), namespace)
    value = _container(OmegaConf.select(cfg, namespace, default=None), namespace)
    if not isinstance(default, dict) or value is None:
        return
    checker = _Checker(namespace, list(_flatten(default, namespace)))
    checker.check_mapping(value, default, "", namespace)
    if checker.problems:
        raise UserError("; ".join(checker.problems))


def whole_value_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with each plain ``key=value`` of a ``WHOLE_VALUE_KEYS`` key made a replace.

    Hydra merges a mapping given on the command line into the node it overrides and cannot put
    one over a list; deleting the node first (``~key``) and adding it again (``+key=value``)
    replaces it whole, so every documented form of such a key works as written.
    """
    parser = OverridesParser.create()
    rewritten = []
    for override in overrides:
        parsed = None
        if not override.startswith(("-", "+", "~")):
            try:
                parsed = parser.parse_override(override)
            except HydraException:
                parsed = None
        if parsed is not None and parsed.key_or_group in WHOLE_VALUE_KEYS and parsed.value_type:
            rewritten += [f"~{parsed.key_or_group}", f"+{override}"]
        else:
            rewritten.append(override)
    return rewritten
