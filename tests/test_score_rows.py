"""`dupn score`: a bad request row costs that row only, named by its line; NaN and out-of-range ids refused."""
import json

import numpy as np
import pytest
import tensorflow as tf

from features.contract import Contract
from features.tfrecord import parse_batch
from models.dupn import build_model
from models_batches import write_examples
from pipeline.serving import export, score
from train_helpers import tiny_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A portable export of an untrained tiny model and six good request rows of two requests."""
    root = tmp_path_factory.mktemp("score")
    config = tiny_config()
    contract = Contract.from_config(config)
    model = build_model(config, contract)
    write_examples(root / "part-0.tfrecord.gz", contract, 6, seed=4)
    serialized = next(iter(tf.data.TFRecordDataset([str(root / "part-0.tfrecord.gz")], "GZIP").batch(6)))
    export.export(model, contract, root / "export", xla=False)
    raw = parse_batch(serialized, contract, hash_ids=False)

    def plain(value):
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, np.ndarray):
            return [plain(v) for v in value]
        return value.item() if isinstance(value, np.generic) else value
    names = export.USER_FEATURES + export.ITEM_FEATURES
    rows = [{"request_id": f"r{i // 3}", **{n: plain(raw[n][i].numpy()) for n in names}}
            for i in range(6)]
    return root / "export", rows


def run_score(export_dir, tmp_path, lines):
    (tmp_path / "req.jsonl").write_text("".join(lines))
    code = score.main(["--model", str(export_dir), "--request", str(tmp_path / "req.jsonl"),
                       "--out", str(tmp_path / "out.jsonl")])
    return code, [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]


def test_each_bad_row_gets_its_own_error_with_its_line_and_the_others_are_scored(exported, tmp_path,
                                                                                  capsys):
    export_dir, rows = exported
    code, good = run_score(export_dir, tmp_path, [json.dumps(r) + "\n" for r in rows])
    assert code == 0 and all("error" not in g for g in good)

    bad = [dict(rows[1], seq_type=[99] + rows[1]["seq_type"][1:]),     # a behaviour type 99
           dict(rows[2], rank_features=[float("nan")] * len(rows[2]["rank_features"])),
           dict(rows[4], seq_time_bucket=[-1] * len(rows[4]["seq_time_bucket"]))]
    lines = [json.dumps(rows[0]) + "\n", "\n", json.dumps(bad[0]) + "\n",   # line 2 is blank
             json.dumps(bad[1]) + "\n", '{"request_id": "r9", "item_id": \n', "[1, 2]\n",
             json.dumps(rows[3]) + "\n", json.dumps(bad[2]) + "\n", json.dumps(rows[5]) + "\n"]
    code, out = run_score(export_dir, tmp_path, lines)
    err = capsys.readouterr().err
    assert code == 1
    assert [o.get("row") for o in out] == [None, 3, 4, 5, 6, None, 8, None]
    where = str(tmp_path / "req.jsonl")
    assert f"{where} row 3: field seq_type: 99 is outside its vocabulary 0..4" in out[1]["error"]
    assert f"{where} row 4: field rank_features: nan is not a finite number" in out[2]["error"]
    assert f"{where} row 5: not JSON text" in out[3]["error"]
    assert f"{where} row 6: expected an object of fields, got list" in out[4]["error"]
    assert f"{where} row 8: field seq_time_bucket: -1 is outside its vocabulary" in out[6]["error"]
    assert out[1]["request_id"] == "r0" and out[1]["item_id"] == rows[1]["item_id"]
    for o in out:
        if "error" in o:
            assert f"dupn score: {o['error']}\n" in err
    # the good rows score as they did with the whole file good: r0 and r1 keep their user
    scored = {(o["request_id"], o["item_id"]): o for o in out if "error" not in o}
    for i in (0, 3, 5):
        expected = good[i]
        got = scored[(expected["request_id"], expected["item_id"])]
        np.testing.assert_allclose([got["ctr"], got["l2r"]], [expected["ctr"], expected["l2r"]],
                                   atol=1e-6)
    assert "5 rejected" in err and "3 candidates scored" in err
