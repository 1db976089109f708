"""Checked settings for the command line and the notebook's environment overrides: one parser per kind of
value, so a bad value is refused with the same one-line message in both and in code; `setting` declares a
config field with its help and parser, once, for all three."""
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


def _number(value, kind: type, ok: Callable[[float], bool], what: str):
    """`value` read as a `kind` (from text, or as it is: a bool is no number) when `ok` accepts it."""
    number = None
    if isinstance(value, str):
        try:
            number = kind(value)
        except ValueError:
            pass
    elif isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool):
        number = value
    if number is None or not ok(number):
        raise ValueError(f"must be {what}, got {value!r}")
    return number


def positive_int(value) -> int:
    return _number(value, int, lambda v: v > 0, "a positive whole number")


def count(value) -> int:
    """A whole number of things, 0 included."""
    return _number(value, int, lambda v: v >= 0, "a whole number >= 0")


def positive_float(value) -> float:
    return _number(value, float, lambda v: v > 0 and math.isfinite(v), "a positive number")


def nonnegative_float(value) -> float:
    return _number(value, float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")


def share(value) -> float:
    """A share of a whole: a number from 0 to 1."""
    return _number(value, float, lambda v: 0 <= v <= 1, "a number from 0 to 1")


def share_below_one(value) -> float:
    """A share that cannot be the whole: a number from 0 up to, not including, 1."""
    return _number(value, float, lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1")


def open_share(value) -> float:
    """A share that is neither none nor the whole: a number between 0 and 1, both excluded."""
    return _number(value, float, lambda v: 0 < v < 1, "a number between 0 and 1 (both excluded)")


def whole_number(value) -> int:
    return _number(value, int, lambda v: True, "a whole number")


def switch(value) -> bool:
    """True or False, or as text "1" or "0" (also true/false, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be 1 or 0, got {value!r}")


def optional_switch(value) -> bool | None:
    """A switch, or None / "auto" (the code decides)."""
    if value is None or isinstance(value, str) and value.strip().lower() == "auto":
        return None
    return switch(value)


def text(value) -> str:
    """Text that says something: not empty, not only spaces."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty text, got {value!r}")
    return value


def optional(parse: Callable[[object], T]) -> Callable[[object], T | None]:
    """`parse`, or None where no value is given (None, or empty text)."""
    def parse_optional(value):
        return None if value is None or isinstance(value, str) and not value.strip() else parse(value)
    parse_optional.__name__ = parse.__name__
    return parse_optional


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value
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


def setting(default, help: str, parse: Callable[[object], object] | None = None, choices: tuple[str, ...] = ()):
    """A dataclass field that is a user setting: its default, its help, and how its value is read and checked
    (`parse`, from text or as given; or one of `choices`). The command line's options, the notebook's overrides
    and `check_settings` are made from these."""
    parse = one_of(*choices) if choices else parse
    return field(default=default, metadata={"help": help, "parse": parse, "choices": choices})


def check_settings(settings) -> None:
    """Check every `setting` field of the dataclass instance `settings` with its own parser, keeping what it reads
    (text becomes the number or switch it spells); for a frozen dataclass's __post_init__. Raises ValueError
    naming the first bad one ("batch_size must be a positive whole number, got 0")."""
    for f in fields(settings):
        if "parse" in f.metadata:
            try:
                value = f.metadata["parse"](getattr(settings, f.name))
            except ValueError as e:
                raise ValueError(f"{f.name} {e}") from None
            object.__setattr__(settings, f.name, value)


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
