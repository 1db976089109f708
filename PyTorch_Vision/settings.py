"""What the committed notebook imports from here, until its next full run replaces its cells: the overrides of
config.py, and the environment's switches and choices read as they are."""
from __future__ import annotations

import os

from .config import SWITCHES, SettingError, config_from_env  # noqa: F401


def switch(text: str) -> bool:
    if text.strip().lower() not in SWITCHES:
        raise ValueError(f"must be 1 or 0, got {text!r}")
    return SWITCHES[text.strip().lower()]


def one_of(*choices: str):
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {text!r}")
        return text
    return parse


def env_setting(name: str, default, parse):
    """The environment variable `name` read by `parse`, or `default` when it is unset."""
    if name not in os.environ:
        return default
    try:
        return parse(os.environ[name])
    except ValueError as e:
        raise SettingError(f"{name} {e}: set it to a valid value (default {default}) or unset it") from None
