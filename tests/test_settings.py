"""The notebook's settings: every TrainConfig field overridable as S11_<FIELD>, each value checked, a bad one
refused in one line that names the variable."""
from dataclasses import fields

import pytest

from PyTorch_Vision.config import SettingError, TrainConfig, config_from_env


def test_every_field_can_be_set_from_the_environment(monkeypatch):
    monkeypatch.setenv("S11_BATCH_SIZE", "256")
    monkeypatch.setenv("S11_MAX_LR", "0.05")
    monkeypatch.setenv("S11_FLIP", "0")
    monkeypatch.setenv("S11_ANNEAL", "linear")
    monkeypatch.setenv("S11_ON_DEVICE_DATA", "auto")
    config = config_from_env(TrainConfig(epochs=3, on_device_data=True))
    assert (config.batch_size, config.max_lr, config.flip, config.anneal) == (256, 0.05, False, "linear")
    assert config.epochs == 3 and config.on_device_data is None  # unset: the base's value; auto: None
    assert config_from_env(TrainConfig(), prefix="NOTHING_SET_") == TrainConfig()


def test_every_field_reads_its_default_written_out_as_itself(monkeypatch):
    for f in fields(TrainConfig):
        value = getattr(TrainConfig(), f.name)
        monkeypatch.setenv("S11_" + f.name.upper(), "auto" if value is None else str(int(value))
                           if isinstance(value, bool) else str(value))
    assert config_from_env(TrainConfig()) == TrainConfig()


@pytest.mark.parametrize("name, text, message", [
    ("S11_BATCH_SIZE", "many", "S11_BATCH_SIZE must be a positive whole number, got 'many'"),
    ("S11_FLIP", "maybe", "S11_FLIP must be 1 or 0, got 'maybe'"),
    ("S11_ON_DEVICE_DATA", "maybe", "S11_ON_DEVICE_DATA must be 1 or 0 or auto, got 'maybe'"),
    ("S11_MAX_LR", "-1", "S11_MAX_LR must be a positive number, got '-1'"),
    ("S11_MAX_MOMENTUM", "1", "S11_MAX_MOMENTUM must be a number from 0 up to (not including) 1, got '1'"),
    ("S11_SEED", "1.5", "S11_SEED must be a whole number, got '1.5'"),
    ("S11_ANNEAL", "step", "S11_ANNEAL must be one of cos, linear, got 'step'"),
    ("S11_BASE_MOMENTUM", "0.99", "base_momentum (0.99) must not exceed max_momentum (0.95): the momentum cycles "
                                  "from max down to base and back: check S11_BASE_MOMENTUM"),
])
def test_a_bad_value_is_refused_naming_the_variable(monkeypatch, name, text, message):
    monkeypatch.setenv(name, text)
    with pytest.raises(SettingError) as e:
        config_from_env(TrainConfig())
    assert message in str(e.value) and "\n" not in str(e.value)
