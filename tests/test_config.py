import math

import pytest

from robustlab.config import (
    ConfigError,
    ExperimentConfig,
    load_config,
    parse_override,
    preset_names,
)


def test_defaults_round_trip_through_yaml(tmp_path):
    config = ExperimentConfig()
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config


def test_overrides_set_nested_values_and_parse_fractions():
    config = load_config(None, ["optim.lr=0.3", "eval.eps=[36/255, 1]", "data.subset_size=390"])
    assert config.optim.lr == 0.3
    assert config.eval.eps == [36 / 255, 1.0]
    assert config.data.subset_size == 390


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key optim.lrr.*valid keys of optim: .*lr"):
        load_config(None, ["optim.lrr=0.1"])


def test_bad_choice_lists_choices():
    with pytest.raises(ConfigError, match=r"loss.name: 'hinge' is not a valid choice.*offset_ce, ce"):
        load_config(None, ["loss.name=hinge"])


def test_wrong_type_is_explained():
    with pytest.raises(ConfigError, match=r"train.batch_size: expected an integer"):
        load_config(None, ["train.batch_size=big"])
    with pytest.raises(ConfigError, match=r"train.flip|augment.flip: expected true or false"):
        load_config(None, ["augment.flip=maybe"])


def test_override_needs_key_and_value():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.lr")


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config("nope")


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_base_inheritance(tmp_path):
    (tmp_path / "parent.yaml").write_text("optim:\n  lr: 0.5\ntrain:\n  epochs: 3\n")
    (tmp_path / "child.yaml").write_text(f"base: {tmp_path / 'parent.yaml'}\ntrain:\n  epochs: 7\n")
    config = load_config(tmp_path / "child.yaml")
    assert config.optim.lr == 0.5 and config.train.epochs == 7
    assert math.isclose(config.loss.offset, math.sqrt(2) * 36 / 255)


def test_every_shipped_preset_loads():
    for name in preset_names():
        assert isinstance(load_config(name), ExperimentConfig)


def test_fraction_with_zero_denominator_is_a_config_error():
    with pytest.raises(ConfigError, match=r"loss.offset: expected a number such as 0.5 or 36/255, got '1/0'"):
        load_config(None, ["loss.offset=1/0"])
