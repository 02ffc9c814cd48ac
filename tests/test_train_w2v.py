"""dupn-w2v through the training job: a new run pre-trains its item table, a restore reloads it, equal
to the table the run pre-trained (frozen: training left it as it was)."""
import numpy as np

from models import w2v
from pipeline.training import train
from pipeline.training.checkpoints import load_model
from train_helpers import tiny_config, tiny_examples


def test_a_w2v_run_pretrains_its_frozen_item_table_and_a_restore_reloads_it(tmp_path, monkeypatch):
    # Keep the table the run pre-trains (checkpoints.new_model imports the function when called):
    # the run's own table is the reference, whatever it was pre-trained from.
    pretrained = []
    learn = w2v.item_table_from_files
    monkeypatch.setattr(w2v, "item_table_from_files",
                        lambda *args, **kwargs: pretrained.append(learn(*args, **kwargs)) or pretrained[-1])
    examples = tiny_examples(tmp_path, ["2026-11-01"])
    config = tiny_config("model.variant=dupn-w2v")
    data = train.range_data(examples, "2026-11-01", "2026-11-01", ["ctr", "l2r", "power"])
    summary = train.train(config, data, tmp_path / "run", log=lambda *_: None)
    assert summary["global_step"] > 0

    _, model = load_model(tmp_path / "run")
    table = model.embeddings.tables["item_id"]
    assert not table.trainable
    rows = table.embeddings.numpy()
    # The skip-gram table zeroes its padding row; the random initialiser never does.
    np.testing.assert_array_equal(rows[0], 0.0)
    assert np.abs(rows[1:]).sum() > 0
    assert len(pretrained) == 1
    np.testing.assert_array_equal(rows, pretrained[0])
