"""The sharing experiment: how the heads share the user representation (model.sharing).

hard (DUPN), shared-bottom, mmoe and ple trained on the same window and evaluated on the same
day, each task's metric beside that task trained alone (gain > 0: the task profits from the
others; < 0: it pays for them, the seesaw). For mmoe and ple, the mean weight each task's gate
gives each expert on the evaluation day's users (sharing_gates.png): a gate that spreads over the
shared experts shares, one that sits on its own experts keeps to itself.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.experiments import plots
from pipeline.experiments.run import Setup, versus_alone

STRUCTURES = ("hard", "shared-bottom", "mmoe", "ple")
GATED = ("mmoe", "ple")
GATE_EXAMPLES = 2000     # users whose gate weights are averaged


def run(setup: Setup):
    """Returns (table, png): versus_alone's rows per structure, then the gate rows (setting, gate,
    expert, value); writes sharing_gates.png too."""
    table, run_dirs, png = versus_alone(setup, "model.sharing", STRUCTURES, "sharing",
                                        "Sharing structures")
    panels = {}
    for structure in (s for s in GATED if s in run_dirs):
        gates = mean_gate_weights(setup, run_dirs[structure])
        table_part = gate_rows(structure, gates)
        panels[structure] = gate_matrix(table_part)
        table = pd.concat([table, table_part], ignore_index=True)
    if panels:
        plots.heatmaps(panels, setup.out_dir / "sharing_gates.png",
                       f"Mean expert weight of each gate on {setup.eval_date} (rows sum to 1)")
    return table, png


def mean_gate_weights(setup: Setup, run_dir) -> dict:
    """{gate: {expert: mean weight}} of a run's model over the evaluation day's CTR examples."""
    import tensorflow as tf

    from features.contract import FINGERPRINTED, Contract, fingerprint_name
    from features.tfrecord import parse_batch
    from pipeline.training.checkpoints import load_model
    from pipeline.evaluation.evaluate import example_files
    config, model = load_model(run_dir)
    contract = Contract.from_config(config)
    files = example_files(setup.examples, setup.eval_date, ["ctr"]).get("ctr")
    if not files:
        raise FileNotFoundError(f"no ctr examples on {setup.eval_date} for the gate weights")
    ds = (tf.data.TFRecordDataset(files, compression_type="GZIP").take(GATE_EXAMPLES)
          .batch(config.trainer.batch_size).map(lambda s: parse_batch(s, contract)))
    gates = tf.function(model.gate_weights, reduce_retracing=True)
    sums, rows = {}, 0
    for batch in ds:
        inputs = {k: batch[k] for k in [*contract.model_inputs,
                                         *map(fingerprint_name, FINGERPRINTED)]}
        for gate, weights in gates(inputs).items():
            sums[gate] = sums.get(gate, 0.0) + weights.numpy().sum(axis=0)
        rows += int(next(iter(batch.values())).shape[0])
    names = model.sharing.gate_experts()
    return {gate: dict(zip(names[gate], (total / rows).tolist())) for gate, total in sums.items()}


def gate_rows(structure: str, gates: dict) -> pd.DataFrame:
    """Table rows of a structure's mean gate weights: setting, gate, expert, value."""
    return pd.DataFrame([{"setting": structure, "gate": gate, "expert": expert, "value": weight}
                         for gate, experts in gates.items() for expert, weight in experts.items()])


def gate_matrix(rows: pd.DataFrame):
    """(matrix [gates, experts], gate names, expert names): NaN where a gate cannot pick the expert
    (ple: another task's own experts)."""
    gates = list(dict.fromkeys(rows["gate"]))
    experts = list(dict.fromkeys(rows["expert"]))
    matrix = np.full((len(gates), len(experts)), np.nan)
    for r in rows.itertuples():
        matrix[gates.index(r.gate), experts.index(r.expert)] = r.value
    return matrix, gates, experts
