import argparse

import pytest
from pydantic import ValidationError

from shared.config import (
    ConfigError,
    LinkConfig,
    add_config_arguments,
    build_config,
    config_from_args,
)


def test_defaults_match_the_design():
    cfg = build_config(read_env=False)
    assert (cfg.latent_dim, cfg.bits_per_value, cfg.memory, cfg.transmission) == (
        64,
        8,
        "hopfield",
        "index",
    )
    assert cfg.index_bits == 8  # ⌈log2 256⌉


def test_digest_is_stable_and_sensitive():
    a, b = build_config(read_env=False), build_config(read_env=False)
    assert a.digest() == b.digest()
    assert a.replace(threshold=0.91).digest() != a.digest()
    assert len(a.digest()) == 64


def test_a_per_dimension_grid_comes_from_the_codec_card_and_enters_the_digest():
    from shared.codec.zoo import card_grid

    uniform = build_config(read_env=False)
    per_dim = uniform.replace(latent_grid="per_dim")
    assert uniform.quantizer_grid() == 1.0
    assert per_dim.quantizer_grid() is card_grid("ae64")
    assert per_dim.quantizer_grid().dim == 64
    assert per_dim.digest() != uniform.digest()


def test_environment_variables_are_read(monkeypatch):
    monkeypatch.setenv("HOPLINK_CAPACITY", "1000")
    monkeypatch.setenv("HOPLINK_MEMORY", "vq")
    cfg = build_config()
    assert cfg.capacity == 1000 and cfg.memory == "vq"
    assert cfg.index_bits == 10


def test_flags_override_environment(monkeypatch):
    monkeypatch.setenv("HOPLINK_THRESHOLD", "0.5")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--threshold", "0.75", "--memory", "vq"]))
    assert cfg.threshold == 0.75 and cfg.memory == "vq"
    assert config_from_args(parser.parse_args([])).threshold == 0.5


@pytest.mark.parametrize(
    "values, field",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"capacity": 0}, "capacity"),
        ({"memory": "lstm"}, "memory"),
        ({"bits_per_value": 17}, "bits_per_value"),
        ({"cue_bits": 8, "cue_tolerance": 9}, "cue_tolerance"),
        ({"memory": "vq", "transmission": "soft"}, "soft"),
        ({"latent_grid": "per_dim", "latent_range": 0.5}, "latent_range"),
        ({"latent_grid": "per_dim", "codec": "no_such_codec"}, "no_such_codec"),
        ({"latent_grid": "per_dim", "latent_dim": 128}, "latent_dim=128"),
        ({"latent_grid": "log"}, "latent_grid"),
    ],
)
def test_invalid_values_name_the_field(values, field):
    with pytest.raises(ConfigError, match=field):
        build_config(values, read_env=False)


def test_unknown_field_is_refused():
    with pytest.raises(ConfigError, match="nonsense"):
        build_config({"nonsense": 1}, read_env=False)


def test_config_is_frozen():
    cfg = LinkConfig()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.threshold = 0.1
