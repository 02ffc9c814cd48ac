"""The checkpoints of tests/data/checkpoints_v1 (written by the models of before issue 13) and their models.

For each case of CASES: the model of configs/small.yaml shrunk by TINY (tables and widths) plus
the case's overrides, one Adam step on a fixed batch, then tf.train.Checkpoint(model, optimizer)
saved as <case>/ckpt, and what the restored model must give back: <case>/expected.npz
(model.scores and, for models that split for serving, score_items of the representation),
<case>/keys.json (tf.train.list_variables: name and shape) and <case>/trainable.json (the order
of model.trainable_variables, which the optimizer's slot list follows). batch.npz is the batch
(inputs and labels) every case trains and predicts on.

  PYTHONPATH=. python tests/checkpoints_v1.py    # wrote them at commit 9838765; never again:
                                                 # they stand for the runs made before the change
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from configs.loader import load_config
from features.contract import Contract
from models.dupn import build_model
from models_batches import TINY, batches

HERE = Path(__file__).resolve().parent / "data" / "checkpoints_v1"

# Tables a few rows long, so that each checkpoint (with Adam's two slots) stays some 100 KB.
SMALL_TABLES = [f"features.{t}={{buckets: {b}, dim: {d}}}" for t, b, d in (
    ("item_id", 61, 4), ("shop_id", 17, 4), ("brand_id", 17, 4), ("category_id", 13, 4),
    ("tags", 13, 4), ("query", 13, 4), ("talent_id", 13, 4), ("talent_type", 7, 2))]
# configs/small.yaml as it was when they were written: the target attention came after them
# (a model dir keeps its own config.yaml, in which the key is absent and the default 0 applies).
BASE = [*TINY, *SMALL_TABLES, "trainer.optimizer=adam", "model.target_attention=0",
        "model.id_match=0", "model.query_match=false",
        "features.type_dim=4", "features.time_bucket_dim=4"]    # small's widths then
CASES = {
    "dupn_all": ["model.interest_match=true", "model.ctr_rank_features=true"],
    "dupn_esmm": ["model.esmm=true"],
    "wide_esmm": ["model.variant=wide", "model.esmm=true"],
    "wide_deep_esmm": ["model.variant=wide-deep", "model.esmm=true"],
    "dssm": ["model.variant=dssm"],
    "dssm_esmm": ["model.variant=dssm", "model.esmm=true"],
    "cnn_max": ["model.variant=cnn-max"],
    "shared_bottom": ["model.sharing=shared-bottom", "model.expert_units=[8]"],
    "mmoe": ["model.sharing=mmoe", "model.experts=2", "model.expert_units=[8]"],
}
SEED = 3


def case_config(name: str):
    return load_config("small", [*BASE, *CASES[name]])


def fixed_batch(contract: Contract):
    """The batch of batch.npz: (inputs, labels) as tensors."""
    data = np.load(HERE / "batch.npz")
    inputs = {k[len("inputs/"):]: tf.constant(data[k]) for k in data if k.startswith("inputs/")}
    labels = {k[len("labels/"):]: tf.constant(data[k]) for k in data if k.startswith("labels/")}
    return inputs, labels


def predictions(model, inputs: dict) -> dict:
    """model.scores and, when the model splits for serving, score_items (prefixed item/)."""
    out = {k: v.numpy() for k, v in model.scores(inputs, training=False).items()}
    if hasattr(model, "score_items"):
        representation = model.user_representation(inputs, training=False)
        out.update({f"item/{k}": v.numpy()
                    for k, v in model.score_items(representation, inputs).items()})
    return out


def trainable_names(model) -> list:
    """Names of model.trainable_variables in order, without the model's own (unique per process) scope."""
    scope = f"{model.name}/"
    return [v.name[len(scope):] if v.name.startswith(scope) else v.name
            for v in model.trainable_variables]


def write_lines(path: Path, items: list) -> None:
    """A JSON list, one item a line (readable diffs)."""
    path.write_text("[\n" + ",\n".join(json.dumps(item) for item in items) + "\n]\n")


def main() -> None:
    keras.utils.set_random_seed(SEED)
    contract = Contract.from_config(case_config("dupn_all"))
    inputs, labels = batches(contract, 1, 24, seed=SEED)[0]
    # Strings (the meta features) as fixed-width bytes: npz loads object arrays only with pickle.
    arrays = {f"{part}/{k}": v.numpy() for part, tensors in (("inputs", inputs), ("labels", labels))
              for k, v in tensors.items()}
    np.savez(HERE / "batch.npz", **{k: v.astype(bytes) if v.dtype == object else v
                                    for k, v in arrays.items()})
    inputs, labels = fixed_batch(contract)
    for name, overrides in CASES.items():
        keras.utils.set_random_seed(SEED)
        model = build_model(case_config(name), contract)
        optimizer = keras.optimizers.Adam(learning_rate=0.01)
        model.compile(optimizer=optimizer)
        model.train_on_batch(inputs, labels)
        folder = HERE / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(folder / "ckpt"))
        np.savez(folder / "expected.npz", **predictions(model, inputs))
        keys = [[k, list(shape)] for k, shape in tf.train.list_variables(str(folder / "ckpt"))]
        write_lines(folder / "keys.json", keys)
        write_lines(folder / "trainable.json", trainable_names(model))
        (folder / "overrides.json").write_text(json.dumps(overrides) + "\n")
        print(name, len(keys), "keys")
    write_lines(HERE / "base_overrides.json", BASE)


if __name__ == "__main__":
    main()
