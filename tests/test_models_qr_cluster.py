"""qr tables under parameter servers: each of the two tables is sharded across the ps, trains, and
the checkpoint restores whole into one process."""
import json
import textwrap

import numpy as np

from train_helpers import TESTS, run_python

DAY = "2026-11-01"

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import features
    import numpy as np
    import tensorflow as tf
    from pipeline.training import train
    from train_helpers import in_process_cluster, tiny_config, tiny_examples

    examples = tiny_examples({root!r}, [{day!r}])
    config = tiny_config("features.item_id.embedding=qr", "trainer.checkpoint_every_steps=10")
    strategy, servers = in_process_cluster(workers=2, ps=2)
    built, build = [], train.new_model
    def new_model(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]
    train.new_model = new_model
    data = train.range_data(examples, {day!r}, {day!r}, train.head_tasks(config))
    run = train.train(config, data, {root!r} + "/run", strategy=strategy)
    item = built[-1].embeddings.tables["item_id"]
    for part in ("quotient", "remainder"):
        np.save({root!r} + f"/{{part}}.npy",
                np.concatenate([v.numpy() for v in getattr(item, part).embeddings.variables]))
    print("RESULT " + json.dumps({{"sharded": run["sharded_tables"], "steps": run["steps"]}}))
""")


def test_qr_tables_shard_train_and_restore_in_one_process(tmp_path):
    done = run_python(["-c", SCRIPT.format(tests=str(TESTS), root=str(tmp_path), day=DAY)], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    # 10006 and 10005 rows x 16 floats, 640 KB each: above the 256 KB shard minimum, one shard per ps.
    assert result["sharded"]["item_id_quotient"] == 2 and result["sharded"]["item_id_remainder"] == 2
    assert result["steps"] > 0
    from pipeline.training.checkpoints import load_model
    _, model = load_model(tmp_path / "run")
    item = model.embeddings.tables["item_id"]
    for part in ("quotient", "remainder"):
        np.testing.assert_array_equal(getattr(item, part).embeddings.numpy(), np.load(tmp_path / f"{part}.npy"))
