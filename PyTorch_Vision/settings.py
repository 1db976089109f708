"""Checked settings for the command line and the notebook's environment overrides: one parser per kind of
value, so a bad value is refused with the same one-line message in both; `setting` declares a config field
with its help and parser, once, for both."""
from __future__ import annotations

import math
import os
from dataclasses import field, fields, replace
from typing import Callable, TypeVar

T = TypeVar("T")


class SettingError(ValueError):
    """A setting's value cannot be used; in a notebook it shows as this one line, without a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how an exception is shown
        return [f"SettingError: {self}"]


def _number(text: str, kind: type, ok: Callable[[float], bool], what: str):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise ValueError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v > 0, "a positive whole number")


def count(text: str) -> int:
    """A whole number of things, 0 included."""
    return _number(text, int, lambda v: v >= 0, "a whole number >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: v > 0 and math.isfinite(v), "a positive number")


def share(text: str) -> float:
    """A share of a whole: a number from 0 to 1."""
    return _number(text, float, lambda v: 0 <= v <= 1, "a number from 0 to 1")


def whole_number(text: str) -> int:
    return _number(text, int, lambda v: True, "a whole number")


def switch(text: str) -> bool:
    """"1" or "0" (also true/false, yes/no, on/off)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be 1 or 0, got {text!r}")


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {text!r}")
        return text
    return parse


def env_setting(name: str, default: T, parse: Callable[[str], T]) -> T:
    """The environment variable `name` parsed by `parse`, or `default` when it is unset."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return parse(text)
    except ValueError as e:
        raise SettingError(f"{name} {e}: set it to a valid value (default {default}) or unset it") from None


def nonnegative_float(text: str) -> float:
    return _number(text, float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")


def optional_switch(text: str) -> bool | None:
    """A switch, or "auto" (None: the code decides)."""
    return None if text.strip().lower() == "auto" else switch(text)


def setting(default, help: str, parse: Callable[[str], object] | None = None, choices: tuple[str, ...] = ()):
    """A dataclass field that is a user setting: its default, its help, and how its text is read (`parse`, or
    one of `choices`). The command line's options and the notebook's overrides are made from these."""
    parse = one_of(*choices) if choices else parse
    return field(default=default, metadata={"help": help, "parse": parse, "choices": choices})


def config_from_env(base: T, prefix: str = "S11_") -> T:
    """`base` (a dataclass of `setting` fields, e.g. TrainConfig()) with each setting overridden by its
    environment variable where one is set: S11_BATCH_SIZE=256 sets batch_size, S11_FLIP=0 turns the flip off. A
    bad value stops with one line naming the variable."""
    changes = {f.name: env_setting(prefix + f.name.upper(), getattr(base, f.name), f.metadata["parse"])
               for f in fields(base)}
    try:
        return replace(base, **changes)
    except ValueError as e:
        set_here = [prefix + k.upper() for k, v in changes.items() if v != getattr(base, k)]
        raise SettingError(f"{e}: check {', '.join(set_here) or 'the settings'}") from None
