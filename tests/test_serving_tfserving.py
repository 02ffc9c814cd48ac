"""The export as TF Serving loads it, checked with TensorFlow's own saved_model_cli: version folders,
both signatures of every part, scores equal to `dupn score`'s, warm-up records that parse back.
One tiny published model is exported once for the module."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from features.tfrecord import parse_batch
from pipeline.serving import export, score, warmup
from pipeline.layout import read_json
from train_helpers import export_published

SAVED_MODEL_CLI = str(Path(sys.executable).parent / "saved_model_cli")


@pytest.fixture(scope="module")
def exported(shared_work, tmp_path_factory):
    """(export dir, published model dir, one request's serialized examples, its request rows)."""
    work, _ = shared_work
    out = tmp_path_factory.mktemp("serving")
    model_dir, _, contract, serialized = export_published(work, out)
    serialized = serialized.numpy()
    raw = parse_batch(serialized, contract, hash_ids=False)
    ids = [r.decode() for r in raw["request_id"].numpy()]
    largest = max(set(ids), key=ids.count)
    keep = [i for i, r in enumerate(ids) if r == largest]
    assert len(keep) > 1   # one user, several candidates
    from test_train_export import request_rows
    rows = [request_rows(raw, ("request_id", *export.USER_FEATURES, *export.ITEM_FEATURES))[i]
            for i in keep]
    return out, model_dir, serialized[keep], rows


def cli(*args) -> str:
    done = subprocess.run([SAVED_MODEL_CLI, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def cli_run(part_dir: Path, signature: str, inputs: dict, outdir: Path) -> dict:
    """saved_model_cli run of one signature on inputs saved as .npz; returns output key -> array."""
    npz = outdir / "inputs.npz"
    outdir.mkdir(parents=True, exist_ok=True)
    np.savez(npz, **inputs)
    cli("run", "--dir", str(part_dir), "--tag_set", "serve", "--signature_def", signature,
        "--inputs", ";".join(f"{k}={npz}[{k}]" for k in inputs), "--outdir", str(outdir / "out"),
        "--overwrite")
    return {p.stem: np.load(p, allow_pickle=True) for p in (outdir / "out").glob("*.npy")}


def test_every_part_is_in_a_version_folder_of_the_models_global_step(exported):
    out, model_dir, _, _ = exported
    step = read_json(model_dir / "run.json")["global_step"]
    assert step > 0
    for part in export.PARTS:
        assert export.versions(out, part) == [step]
        assert (out / part / str(step) / "saved_model.pb").exists()
    info = read_json(out / "export.json")
    assert info["version"] == step and info["user_part_xla"] is False
    assert info["signatures"] == ["serving_default", "from_examples"]


def test_saved_model_cli_shows_both_signatures_of_every_part(exported):
    out = exported[0]
    for part in export.PARTS:
        shown = cli("show", "--dir", str(export.part_dir(out, part)), "--all")
        assert "signature_def['serving_default']" in shown and "signature_def['from_examples']" in shown
        assert "inputs['examples']" in shown
        if part == "item":
            assert "inputs['user_representation']" in shown and "outputs['ctr']" in shown


def test_saved_model_cli_scores_equal_dupn_score(exported, tmp_path):
    out, _, serialized, rows = exported
    scored = score.score_requests(out, rows)
    contract, _ = score.export_contract(out)
    user_inputs = score.batch(rows[:1], export.USER_FEATURES, contract, "request")
    user = cli_run(export.part_dir(out, "user"), "serving_default", user_inputs, tmp_path / "user")
    representation = user["user_representation"]
    assert representation.shape[0] == 1
    candidates = score.batch(rows, export.ITEM_FEATURES, contract, "request")
    item = cli_run(export.part_dir(out, "item"), "serving_default",
                   {"user_representation": representation, **candidates}, tmp_path / "item")
    # The whole part on the same candidates' serialized tf.Examples, through from_examples.
    whole = cli_run(export.part_dir(out, "whole"), "from_examples",
                    {"examples": np.asarray(list(serialized), dtype=object)}, tmp_path / "whole")
    for head in ("ctr", "l2r"):
        expected = [s[head] for s in scored]
        np.testing.assert_allclose(item[head], expected, atol=1e-5, err_msg=head)
        np.testing.assert_allclose(whole[head], expected, atol=1e-5, err_msg=head)


def test_warmup_records_parse_back_as_prediction_logs_one_per_signature(exported):
    out = exported[0]
    for part in export.PARTS:
        folder = export.part_dir(out, part)
        logs = warmup.read_warmup(folder)
        assert [log.predict_log.request.model_spec.signature_name for log in logs] == [
            "serving_default", "from_examples"]
        assert all(log.predict_log.request.model_spec.name == part for log in logs)
        signatures = tf.saved_model.load(str(folder)).signatures
        for log in logs:
            request = log.predict_log.request
            function = signatures[request.model_spec.signature_name]
            assert set(request.inputs) == set(function.structured_input_signature[1])
            # The recorded request runs as TF Serving would replay it.
            outputs = function(**{k: tf.make_ndarray(v) for k, v in request.inputs.items()})
            assert all(v.shape[0] == 1 for v in outputs.values())
