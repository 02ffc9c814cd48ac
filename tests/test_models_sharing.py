"""Sharing structures (models/sharing.py): shapes, gates as distributions, which task's loss reaches
which PLE experts, hard sharing unchanged, save/load, training, new-task warm start, baselines."""
import re

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from features.contract import Contract
from models.config import contract_config, head_configs
from models.dupn import DUPN, build_model
from models.head_inputs import CandidateInputs
from models.sharing import STRUCTURES, make_sharing
from pipeline.bench.random_batch import random_batch
from models_batches import as_dataset, batches, tiny_config
from pipeline.training.checkpoints import RunCheckpoints, make_optimizer

TASKS = ["ctr", "l2r", "power"]
# Fewer heads than models_batches' five (ctr and l2r are the served ones, power multi-class):
# every fit traces the train step, and fewer heads trace faster.
SMALL = ["model.experts=2", "model.task_experts=2", "model.expert_units=[12, 6]",
         "model.heads=[{name: ctr, weight: 1.0, hidden_units: [8]}, "
         "{name: l2r, weight: 1.0, hidden_units: [8]}, "
         "{name: power, weight: 1.0, hidden_units: [8]}]"]


def sharing(structure, levels=2):
    return {"structure": structure, "experts": 3, "task_experts": 2, "expert_units": [10, 5],
            "ple_levels": levels}


@pytest.fixture(scope="module")
def contract():
    return Contract.from_config(tiny_config())


@pytest.fixture(scope="module")
def data(contract):
    return batches(contract, 3, 64, seed=21)


def make(contract, structure, *overrides, seed=5):
    keras.utils.set_random_seed(seed)
    model = build_model(tiny_config(f"model.sharing={structure}", *SMALL, *overrides), contract)
    model.compile(optimizer=keras.optimizers.Adagrad(0.1))
    return model


@pytest.mark.parametrize("structure", STRUCTURES)
def test_output_and_gate_shapes(structure):
    layer = make_sharing(sharing(structure), TASKS)
    representation = tf.random.normal([7, 16], seed=1)
    outputs, gates = layer(representation)
    assert list(outputs) == TASKS
    width = 16 if structure == "hard" else 5
    assert all(tuple(o.shape) == (7, width) for o in outputs.values())
    expected = {"hard": {}, "shared-bottom": {},
                "mmoe": {t: 3 for t in TASKS},
                "ple": {**{t: 2 + 3 for t in TASKS}, **{f"level1/{t}": 2 + 3 for t in TASKS},
                        "level1/shared": 3 + 3 * 2}}[structure]
    assert {k: g.shape[1] for k, g in gates.items()} == expected
    assert {k: len(c) for k, c in layer.gate_experts().items()} == expected
    if structure == "hard":
        assert not layer.weights and all(o is representation for o in outputs.values())


@pytest.mark.parametrize("structure", ["mmoe", "ple"])
def test_gate_weights_are_distributions_over_the_experts(contract, data, structure):
    model = make(contract, structure)
    inputs = data[0][0]
    gates = model.gate_weights(inputs)
    assert set(gates) >= {"ctr", "l2r", "power"}
    for key, weights in gates.items():
        weights = np.asarray(weights)
        assert weights.shape[0] == 64 and weights.shape[1] == len(model.sharing.gate_experts()[key])
        assert (weights >= 0).all(), key
        np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5, err_msg=key)
    # Each task's gate depends on the user: its weights differ between rows.
    assert np.ptp(np.asarray(gates["ctr"]), axis=0).max() > 1e-4


def local_name(variable) -> str:
    """A weight's name without its model's (dupn/, dupn_1/, ...)."""
    return re.sub(r"^dupn(_\d+)?/", "", variable.name)


def local_names(model) -> list[str]:
    return [local_name(w) for w in model.weights]


def gradients_of(model, batch, task, variables):
    """Gradients of one task's loss (its head's, over its rows) with respect to `variables`."""
    inputs, labels = batch
    with tf.GradientTape() as tape:
        _, per_head = model.task_losses(labels, model.head_logits(inputs, training=True))
        loss = per_head[task][0]
    return tape.gradient(loss, variables)


def reached(gradients) -> bool:
    """Whether any gradient is there and non-zero."""
    return any(g is not None and bool(tf.reduce_any(g != 0.0)) for g in gradients)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_ple_task_experts_of_the_last_level_get_no_gradient_from_other_tasks(contract, levels):
    model = make(contract, "ple", f"model.ple_levels={levels}")
    batch = random_batch(contract, 40, seed=4)
    last = model.sharing.cgc[-1]
    own = last.own_experts["ctr"].trainable_variables + last.task_gates["ctr"].trainable_variables
    # ctr's last-level experts and gate: power's loss never reaches them, ctr's own does.
    assert all(g is None for g in gradients_of(model, batch, "power", own))
    assert reached(gradients_of(model, batch, "ctr", own))
    assert reached(gradients_of(model, batch, "power", last.shared_experts.trainable_variables))
    if levels > 1:
        # Below the last level ctr's experts also feed the shared gate, so power's loss reaches
        # them through the next level's shared experts; ctr's gate there still gets none.
        below = model.sharing.cgc[-2]
        assert reached(gradients_of(model, batch, "power",
                                    below.own_experts["ctr"].trainable_variables))
        assert all(g is None for g in gradients_of(model, batch, "power",
                                                   below.task_gates["ctr"].trainable_variables))


def test_hard_sharing_is_the_model_as_before(contract, data):
    inputs = data[0][0]
    model = make(contract, "hard", "model.interest_match=false", "model.ctr_rank_features=false",
                 "model.target_attention=0", "model.id_match=0", "model.query_match=false")
    assert not model.sharing.weights
    # The same seed gives the same weights and outputs as a DUPN built without a sharing argument.
    keras.utils.set_random_seed(5)
    config = tiny_config(*SMALL)
    plain = DUPN(contract_config(contract), head_configs(config), lstm_units=12,
                 attention_units=8, shared_dim=16, dropout=config.model.dropout,
                 l2=config.model.l2)
    plain(inputs)
    assert local_names(plain) == local_names(model)
    for a, b in zip(plain.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    # Every head reads the representation itself.
    representation = model.user_representation(inputs)
    outputs = model(inputs)
    for h in model.heads:
        candidate = CandidateInputs(model, inputs).join(h.candidate_inputs)
        direct = h.probabilities(h(representation, candidate))
        np.testing.assert_array_equal(outputs[h.task], direct, err_msg=h.task)
        np.testing.assert_array_equal(outputs[h.task], plain(inputs)[h.task], err_msg=h.task)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_a_few_steps_lower_the_loss_and_keras_files_round_trip(contract, data, structure,
                                                               tmp_path):
    model = make(contract, structure)
    losses = model.fit(as_dataset(data), epochs=3, verbose=0).history["loss"]
    assert losses[-1] < losses[0] - 0.05, f"{structure}: loss {losses}"
    inputs = data[1][0]
    path = tmp_path / f"{structure}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.sharing_config == model.sharing_config
    assert type(loaded.sharing) is type(model.sharing)
    assert local_names(loaded) == local_names(model)
    for head, p in model(inputs).items():
        np.testing.assert_allclose(loaded(inputs)[head], p, atol=1e-6, err_msg=head)
    gates = model.gate_weights(inputs)
    assert bool(gates) == (structure in ("mmoe", "ple"))
    for key, g in gates.items():
        np.testing.assert_allclose(loaded.gate_weights(inputs)[key], g, atol=1e-6, err_msg=key)
    # The serving split (user representation, then the items) scores as the whole model.
    split = loaded.score_items(loaded.user_representation(inputs), inputs)
    for head in ("ctr", "l2r"):
        np.testing.assert_allclose(split[head], model(inputs)[head], atol=1e-5, err_msg=head)


def with_heads(*names) -> str:
    return "model.heads=[" + ", ".join(f"{{name: {n}, weight: 1.0, hidden_units: [8]}}"
                                       for n in names) + "]"


@pytest.mark.parametrize("structure", ["mmoe", "ple"])
def test_a_new_task_warm_starts_from_a_model_without_it(contract, structure, tmp_path):
    """The transfer fine-tune adds the shop head: its gates and experts are new; every other
    weight and optimizer slot is restored (the shared gates' per-task blocks keep every shape,
    and each task's variables come last in the optimizer's order)."""
    config = tiny_config(f"model.sharing={structure}", *SMALL, with_heads("ctr", "power"))
    source = build_model(config, contract)
    source.compile(optimizer=make_optimizer(config.trainer, source))
    source.optimizer.apply_gradients((tf.random.normal(v.shape), v)
                                     for v in source.trainable_variables)   # slots not initial
    RunCheckpoints(source, source.optimizer, tmp_path / "source").save()

    config = tiny_config(f"model.sharing={structure}", *SMALL, with_heads("ctr", "power", "shop"))
    target = build_model(config, contract)
    optimizer = make_optimizer(config.trainer, target)
    target.compile(optimizer=optimizer)
    RunCheckpoints(target, optimizer, tmp_path / "target").warm_start(tmp_path / "source",
                                                                       allow_new_layers=True)
    new = {id(v) for v in target.task_variables("shop")}
    assert any(local_name(v).startswith("sharing/") for v in target.task_variables("shop"))
    assert all("shop" in local_name(v) for v in target.task_variables("shop"))
    by_name = {local_name(v): v for v in source.trainable_variables}
    restored = [v for v in target.trainable_variables if id(v) not in new]
    assert sorted(map(local_name, restored)) == sorted(by_name)
    for v in restored:
        np.testing.assert_array_equal(v.numpy(), by_name[local_name(v)].numpy(), err_msg=v.name)
    slots = source.optimizer.variables
    assert len(optimizer.variables) > len(slots)
    for a, b in zip(slots, optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.name)


@pytest.mark.parametrize("variant", ["dssm", "cnn-max"])
def test_representation_baselines_share_and_split(contract, data, variant):
    model = make(contract, "ple", f"model.variant={variant}")
    inputs = data[0][0]
    outputs = model(inputs)
    representation = model.user_representation(inputs)
    split = model.score_items(representation, inputs)
    for head in ("ctr", "l2r"):
        np.testing.assert_allclose(split[head], outputs[head], atol=1e-5, err_msg=head)
    # One user's [1, D] representation scores every candidate as its repeated rows do.
    one = model.score_items(representation[:1], inputs)
    repeated = model.score_items(tf.repeat(representation[:1], 64, axis=0), inputs)
    np.testing.assert_allclose(one["ctr"], repeated["ctr"], atol=1e-6)


@pytest.mark.parametrize("variant", ["wide", "wide-deep"])
def test_wide_models_refuse_a_sharing_structure(contract, variant):
    with pytest.raises(ValueError, match="model.sharing must be hard, not mmoe"):
        build_model(tiny_config(f"model.variant={variant}", "model.sharing=mmoe"), contract)
