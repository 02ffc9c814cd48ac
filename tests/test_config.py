"""configs/: the paper's settings load, overrides apply, every bad setting fails naming file and key."""
import argparse
import re

import pytest

from configs.loader import (CONFIG_DIR, ConfigError, add_config_args, config_from_args, dump_config,
                            from_dict, load_config, to_dict)
from configs.schema import Config, HeadConfig, Table

DUPN_YAML = str(CONFIG_DIR / "dupn.yaml")


def test_dupn_yaml_holds_the_papers_settings():
    c = load_config("dupn")
    assert c.data.sequence_length == 100
    f = c.features
    assert (f.item_id.dim, f.shop_id.dim, f.brand_id.dim, f.category_id.dim, f.tags.dim) == \
        (32, 24, 24, 16, 28)
    assert (f.type_dim, f.scene_dim, f.time_bucket_dim) == (16, 16, 16)
    assert c.model.lstm_units == 128 and c.model.shared_dim == 256
    assert c.trainer.batch_size == 1024 and c.trainer.optimizer == "adagrad"
    assert c.model.dropout > 0 and c.model.l2 > 0
    assert [h.name for h in c.model.heads] == ["ctr", "l2r", "talent", "power"]
    assert c.model.heads[0] == HeadConfig("ctr", 1.0, [256, 128, 64])
    # the file and the schema's defaults agree: the YAML restates the paper and adds three
    # extensions of ours, the interest match (two interests), rank features in the ctr head,
    # the target attention and the id match with signed weights (off in the schema, so
    # configurations written before them still build the model they trained)
    paper = Config()
    paper.model.interest_match = True
    paper.model.interest_heads = 2
    paper.model.ctr_rank_features = True
    paper.model.target_attention = 32
    paper.model.id_match = 4
    paper.model.id_match_signed = True
    assert c == paper


def test_small_yaml_is_the_same_structure_at_small_widths():
    c = load_config("small")
    assert c.data.sequence_length == 40 and c.model.lstm_units == 32 and c.trainer.batch_size == 256
    assert c.features.item_id == Table(20011, 16)
    assert [h.name for h in c.model.heads] == ["ctr", "l2r", "talent", "power"]
    assert c.model.variant == "dupn-all" and c.trainer.optimizer == "adam"
    assert c.model.target_attention == 16 and c.model.id_match == 4 and c.trainer.epochs == 1
    # keys small.yaml leaves out keep the defaults
    assert c.trainer.publish_margin == 0.01 and c.runtime.runner == "BundleBasedDirectRunner"


def test_a_path_loads_like_a_name():
    assert load_config(DUPN_YAML) == load_config("dupn")


def test_overrides_apply_with_yaml_types():
    c = load_config("small", ["model.lstm_units=64", "trainer.optimizer=adam", "model.peepholes=true",
                              "features.item_id.dim=12", "model.l2=1e-6", "trainer.learning_rate=1",
                              "model.heads=[{name: shop, weight: 0.5}]"])
    assert c.model.lstm_units == 64 and c.trainer.optimizer == "adam" and c.model.peepholes is True
    assert c.features.item_id == Table(20011, 12)       # the bucket count from small.yaml is kept
    assert c.model.l2 == 1e-6                           # YAML 1.1 reads 1e-6 as a string
    assert c.trainer.learning_rate == 1.0 and isinstance(c.trainer.learning_rate, float)
    assert c.model.heads == [HeadConfig("shop", 0.5, [256, 128, 64])]
    # later overrides win
    assert load_config("small", ["data.lookback_days=1", "data.lookback_days=2"]).data.lookback_days == 2


def test_a_partial_table_keeps_the_fields_own_defaults():
    c = from_dict({"features": {"item_id": {"buckets": 5000}, "shop_id": {"dim": 8}}})
    assert c.features.item_id == Table(5000, 32)        # item_id's 32, not Table's 16
    assert c.features.shop_id == Table(100_003, 8)


def test_argparse_flags(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_args(parser, default="small")
    args = parser.parse_args(["--set", "data.sequence_length=7", "--set", "runtime.seed=3"])
    c = config_from_args(args)
    assert (c.data.sequence_length, c.runtime.seed, c.model.lstm_units) == (7, 3, 32)
    args = parser.parse_args(["--config", DUPN_YAML])
    assert config_from_args(args).model.lstm_units == 128


def write(tmp_path, text, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# (yaml text, error pattern): each names the file and the key
FILE_ERRORS = [
    ("data: {sequence_lenght: 5}", r"unknown key 'data\.sequence_lenght' \(known: .*sequence_length"),
    ("colour: red", r"unknown key 'colour'"),
    ("data: {sequence_length: ten}", r"data\.sequence_length: expected int, got str 'ten'"),
    ("data: {sequence_length: 5.5}", r"data\.sequence_length: expected int, got float 5\.5"),
    ("data: {sequence_length: true}", r"data\.sequence_length: expected int, got bool True"),
    ("model: {peepholes: 1}", r"model\.peepholes: expected bool, got int 1"),
    ("model: {heads: {name: ctr}}", r"model\.heads: expected a list, got dict"),
    ("model: {heads: [{name: ctr, hidden_units: [8, x]}]}",
     r"model\.heads\[0\]\.hidden_units\[1\]: expected int, got str 'x'"),
    ("data: {sequence_length: 0}", r"data\.sequence_length: 0 is below the minimum 1"),
    ("features: {item_id: {buckets: 1}}", r"features\.item_id\.buckets: 1 is below the minimum 2"),
    ("data: {max_bad_share: 1.5}", r"data\.max_bad_share: 1\.5 is above the maximum 1\.0"),
    ("model: {dropout: .nan}", r"model\.dropout: expected a finite number, got nan"),
    ("trainer: {optimizer: lamb}", r"trainer\.optimizer: 'lamb' is not one of adagrad, adam, sgd"),
    ("model: {heads: [{name: ctr}, {name: ranking}]}",
     r"model\.heads\[1\]\.name: 'ranking' is not one of ctr, l2r"),
    ("data: [1, 2]", r"data: expected a mapping, got list"),
    ("- 1", r"top level: expected a mapping, got list"),
]


@pytest.mark.parametrize("text,pattern", FILE_ERRORS)
def test_bad_settings_fail_naming_file_and_key(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(path)}: {pattern}"):
        load_config(path)


def test_duplicate_head_names_fail_naming_both_heads(tmp_path):
    path = write(tmp_path, "model:\n  heads:\n    - {name: ctr}\n    - {name: l2r}\n    - {name: ctr}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(path)}: model\.heads\[2\]\.name: 'ctr' is "
                                          r"already the name of model\.heads\[0\]$"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"with --set model\.heads=.*model\.heads\[1\]\.name: 'power'"):
        load_config("small", ["model.heads=[{name: power}, {name: power}]"])


def test_bad_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "data: {sequence_length: [1, 2}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(path)}: not valid YAML: .*line 1"):
        load_config(path)


def test_a_folder_named_like_a_packaged_config_does_not_hide_it(tmp_path, monkeypatch):
    (tmp_path / "small").mkdir()     # e.g. a work folder called small in the current directory
    monkeypatch.chdir(tmp_path)
    assert load_config("small") == load_config(CONFIG_DIR / "small.yaml")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nosuch: no such configuration file \(nor configs/nosuch\.yaml\)"):
        load_config("nosuch")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}/x.yaml: no such configuration file")):
        load_config(tmp_path / "x.yaml")


def test_override_errors_name_the_override_and_key():
    with pytest.raises(ConfigError, match=r"^--set model\.lstm_units: expected key=value$"):
        load_config("small", ["model.lstm_units"])
    with pytest.raises(ConfigError, match=r"^--set =3: expected key=value$"):
        load_config("small", ["=3"])
    cases = [
        ("model.lstm_unit=3", r"unknown key 'model\.lstm_unit'"),
        ("model.lstm_units=-1", r"model\.lstm_units: -1 is below the minimum 1"),
        ("model.lstm_units=wide", r"model\.lstm_units: expected int, got str 'wide'"),
        ("trainer.optimizer=rmsprop", r"trainer\.optimizer: 'rmsprop' is not one of"),
        ("trainer.publish_margin=2", r"trainer\.publish_margin: 2\.0 is above the maximum 1\.0"),
        ("model.lstm_units.size=3", r"--set model\.lstm_units\.size=3: lstm_units is not a section"),
        ("model.heads=[1", r"--set model\.heads=\[1: not valid YAML"),
    ]
    small = str(CONFIG_DIR / "small.yaml")
    for override, pattern in cases:
        with pytest.raises(ConfigError, match=pattern) as err:
            load_config("small", [override])
        message = str(err.value)
        assert f"--set {override}" in message, message
        if "section" not in pattern and "YAML" not in pattern:
            assert message.startswith(f"{small} with --set {override}: "), message


def test_dump_config_round_trip(tmp_path):
    config = load_config("small", ["model.heads=[{name: shop, weight: 2.5, hidden_units: [4]}]",
                                   "model.l2=1e-6", "features.tags.dim=5"])
    path = dump_config(config, tmp_path / "model")
    assert path == tmp_path / "model" / "config.yaml"
    again = load_config(path)
    assert again == config
    assert to_dict(again) == to_dict(config)
    assert again != load_config("small")        # the overrides survived, not the file's values
