"""`dupn export` and `dupn score`: the user and item SavedModels together score exactly as the whole one
and as the Keras model, from raw string ids; requests in JSON Lines and Parquet score the same;
`dupn bench serve` times the two paths once they agree."""
import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from features.contract import Contract
from features.tfrecord import parse_batch
from pipeline.serving import export
from pipeline.serving import score
from models.dupn import build_model
from models_batches import write_examples
from train_helpers import export_published, tiny_config


@pytest.fixture(scope="module")
def exported(shared_work, tmp_path_factory):
    work, _ = shared_work
    out = tmp_path_factory.mktemp("export")
    _, model, contract, serialized = export_published(work, out)
    return out, model, contract, serialized


def assert_split_equals_whole(out, model, contract, serialized, rows: int) -> None:
    """The exported user + item parts score the examples as the whole part and the Keras model."""
    raw = parse_batch(serialized, contract, hash_ids=False)
    assert raw["item_id"].dtype == tf.string   # signatures take the raw ids
    user, item, whole = (export.load_part(out, p) for p in export.PARTS)
    representation = user(**{k: raw[k] for k in export.USER_FEATURES})["user_representation"]
    # model.shared_dim of the tiny config, the interest vector (model.interest_match), then the
    # target attention's keys and values: 6 steps x (2 x 16 units + the valid flag), then the id
    # match's per-step ids: 6 steps x (4 ids + the tag slots + 4 weights), then the query match's
    # query fingerprints, one per term
    assert representation.shape == (rows, 16 + model.interest_dim + 6 * (2 * 16 + 1)
                                    + 6 * (4 + contract.tag_slots + 4) + contract.query_terms)
    split = item(user_representation=representation, **{k: raw[k] for k in export.ITEM_FEATURES})
    entire = whole(**{k: raw[k] for k in export.USER_FEATURES + export.ITEM_FEATURES})
    keras_scores = model(parse_batch(serialized, contract), training=False)
    for head in ("ctr", "l2r"):
        np.testing.assert_allclose(split[head], entire[head], atol=1e-5)
        np.testing.assert_allclose(entire[head], keras_scores[head], atol=1e-5)
    # One user's representation [1, D] scores all of that user's candidates.
    one = item(user_representation=representation[:1], **{k: raw[k] for k in export.ITEM_FEATURES})
    tiled = item(user_representation=tf.repeat(representation[:1], rows, axis=0),
                 **{k: raw[k] for k in export.ITEM_FEATURES})
    np.testing.assert_allclose(one["ctr"], tiled["ctr"], atol=1e-6)


def test_split_scores_equal_whole_and_the_keras_model(exported):
    out, model, contract, serialized = exported
    info = json.loads((out / "export.json").read_text())
    assert info["heads"] == ["ctr", "l2r"] and info["inputs"]["item"][0] == "user_representation"
    assert_split_equals_whole(out, model, contract, serialized, 60)


@pytest.mark.parametrize("structure", ["shared-bottom", "mmoe", "ple"])
def test_split_with_a_sharing_structure_equals_the_whole_model(tmp_path, structure):
    """The structure's experts and gates run in the item part, on the user representation: the
    split still scores as the whole model (and per-user [1, D] requests as repeated rows).
    (hard sharing, the default, is the exported model of the tests above.)"""
    config = tiny_config(f"model.sharing={structure}", "model.ple_levels=2", "model.expert_units=[8]")
    contract = Contract.from_config(config)
    model = build_model(config, contract)
    write_examples(tmp_path / "part-0.tfrecord.gz", contract, 24, seed=9)
    serialized = next(iter(tf.data.TFRecordDataset([str(tmp_path / "part-0.tfrecord.gz")],
                                                   "GZIP").batch(24)))
    export.export(model, contract, tmp_path / "export")
    assert_split_equals_whole(tmp_path / "export", model, contract, serialized, 24)
    if structure != "ple":
        return
    # level 1's shared gate mixes 4 shared experts and one of each of the 3 tasks (defaults).
    gates = model.gate_weights(parse_batch(serialized, contract))
    assert gates["level1/shared"].shape == (24, 4 + 3 * 1)


def request_rows(raw, names) -> list[dict]:
    """The parsed examples as request rows: raw strings, lists and plain numbers."""
    def plain(value):
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, np.ndarray):
            return [plain(v) for v in value]
        return value.item() if isinstance(value, np.generic) else value
    return [{name: plain(raw[name][i].numpy()) for name in names} for i in range(raw["item_id"].shape[0])]


def flat(row: dict) -> dict:
    """A Parquet row: every list a ';'-separated string, a behaviour's tags joined by '|'."""
    out = {}
    for k, v in row.items():
        if k == "seq_tags":
            v = ";".join("|".join(tags) for tags in v)
        elif isinstance(v, list):
            v = ";".join(str(x) for x in v)
        out[k] = v
    return out


def test_score_jsonl_and_parquet_requests_match_the_whole_model(exported, tmp_path):
    out, _, contract, serialized = exported
    raw = parse_batch(serialized, contract, hash_ids=False)
    names = ("request_id", *export.USER_FEATURES, *export.ITEM_FEATURES)
    rows = request_rows(raw, names)
    assert len({r["request_id"] for r in rows}) < len(rows)   # several candidates per request
    (tmp_path / "req.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame([flat(r) for r in rows]).to_parquet(tmp_path / "req.parquet")
    for name in ("req.jsonl", "req.parquet"):
        assert score.main(["--model", str(out), "--request", str(tmp_path / name),
                           "--out", str(tmp_path / f"{name}.out")]) == 0
    scored = [json.loads(line) for line in (tmp_path / "req.jsonl.out").read_text().splitlines()]
    assert scored == [json.loads(line) for line in (tmp_path / "req.parquet.out").read_text().splitlines()]
    whole = export.load_part(out, "whole")(**{k: raw[k] for k in export.USER_FEATURES + export.ITEM_FEATURES})
    assert [s["item_id"] for s in scored] == [r["item_id"] for r in rows]
    for head in ("ctr", "l2r"):
        np.testing.assert_allclose([s[head] for s in scored], whole[head], atol=1e-5)


def test_an_exported_version_is_replaced_only_when_asked(tmp_path, capsys):
    from train_helpers import fake_run
    model = fake_run(tmp_path, "m")                  # its newest checkpoint, ckpt-20: version 20
    served = tmp_path / "export" / "user" / "20" / "saved_model.pb"
    served.parent.mkdir(parents=True)
    served.write_text("in service")
    assert export.main(["--model", str(model), "--out", str(tmp_path / "export")]) == 1
    err = capsys.readouterr().err
    assert f"{served.parent} already exist" in err and "--replace" in err
    assert served.read_text() == "in service"


def test_bad_request_row_is_named(exported, tmp_path, capsys):
    out = exported[0]
    rows = [{"request_id": "r1", "item_id": "a"},
            {"request_id": "r1", "item_id": "b", "rank_features": list(range(9))}]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score.main(["--model", str(out), "--request", str(tmp_path / "bad.jsonl")]) == 1
    assert "bad.jsonl row 2: field rank_features: 9 values, the contract has 8" in capsys.readouterr().err


def test_an_esmm_model_exports_cvr_and_ctcvr_and_its_split_equals_the_whole(exported, tmp_path):
    from models.dupn import build_model
    from train_helpers import tiny_config
    _, _, contract, serialized = exported
    model = build_model(tiny_config("model.esmm=true"), contract)
    info = export.export(model, contract, tmp_path / "esmm", xla=False)
    assert info["heads"] == info["outputs"]["item"] == ["ctr", "cvr", "ctcvr", "l2r"]
    raw = parse_batch(serialized, contract, hash_ids=False)
    user, item, whole = (export.load_part(tmp_path / "esmm", p) for p in export.PARTS)
    representation = user(**{k: raw[k] for k in export.USER_FEATURES})["user_representation"]
    split = item(user_representation=representation, **{k: raw[k] for k in export.ITEM_FEATURES})
    entire = whole(**{k: raw[k] for k in export.USER_FEATURES + export.ITEM_FEATURES})
    keras_scores = model.scores(parse_batch(serialized, contract), training=False)
    for name in info["heads"]:
        np.testing.assert_allclose(split[name], entire[name], atol=1e-5, err_msg=name)
        np.testing.assert_allclose(entire[name], keras_scores[name], atol=1e-5, err_msg=name)
    np.testing.assert_allclose(split["ctcvr"], split["ctr"] * split["cvr"], rtol=1e-6)
    # dupn score writes every exported score
    rows = request_rows(raw, ("request_id", *export.USER_FEATURES, *export.ITEM_FEATURES))[:6]
    (tmp_path / "req.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score.main(["--model", str(tmp_path / "esmm"), "--request", str(tmp_path / "req.jsonl"),
                       "--out", str(tmp_path / "out.jsonl")]) == 0
    scored = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([s["ctcvr"] for s in scored], entire["ctcvr"][:6], atol=1e-5)


def test_bench_serve_reports_its_figures_and_a_split_that_agrees_with_the_whole(shared_work, capsys):
    from pipeline.bench import commands as bench
    work, _ = shared_work
    code = bench.main(["serve", "--work", str(work), "--candidates", "16", "--repeats", "2", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    published = work / "published" / (work / "published" / "LATEST").read_text().strip()
    assert result["model"] == str(published)
    assert (result["candidates"], result["sequence_length"], result["repeats"]) == (16, 6, 2)
    assert result["user_part_xla"] is False and result["cpus"] >= 1
    assert all(result[key] > 0 for key in ("whole_ms", "split_ms", "user_ms"))
    # The speedup comes from the unrounded times; the printed times are rounded to a microsecond.
    assert result["speedup"] == pytest.approx(result["whole_ms"] / result["split_ms"], rel=0.01, abs=0.01)
    # The user part once, then the item part on 16 candidates: the whole model's scores.
    assert 0.0 <= result["max_score_gap"] <= 1e-5
