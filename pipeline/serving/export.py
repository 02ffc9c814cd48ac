"""`dupn export`: three SavedModels of a published model for serving: user part, item part and whole.

    dupn export --work WORK [--model MODEL_DIR] --out DIR

  DIR/user   behaviour sequence, query and profile -> user_representation [B, shared_dim]
  DIR/item   user_representation ([B, D], or [1, D] for one user's candidates) + the candidates'
             item and ranking features -> ctr, l2r [B] (with model.esmm also cvr, ctcvr; model.sharing's
             experts and gates run here)
  DIR/whole  every feature of each candidate row -> the same scores (the user part recomputed per row)
Every signature ("serving_default") takes the contract's raw values under the contract's names:
string ids are hashed inside (features.tfrecord.hash_features), so clients never see hash tables.
A request for one user and K candidates runs the user part once and the item part on K rows.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf

from features.contract import Contract
from features.tfrecord import hash_features

USER_FEATURES = ("seq_item_id", "seq_shop_id", "seq_brand_id", "seq_category_id", "seq_tags",
                 "seq_type", "seq_scene", "seq_time_bucket", "query", "age_bucket", "gender")
ITEM_FEATURES = ("item_id", "shop_id", "brand_id", "category_id", "tags", "rank_features")
REPRESENTATION = "user_representation"
PARTS = ("user", "item", "whole")
TF_DTYPES = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}


def input_specs(contract: Contract, names) -> dict[str, tf.TensorSpec]:
    """name -> TensorSpec [None, *shape] of the feature's raw dtype (ids as strings)."""
    return {n: tf.TensorSpec([None, *contract.features[n].shape],
                             TF_DTYPES[contract.features[n].dtype], name=n) for n in names}


class ServingPart(tf.Module):
    """One exported part: its serving function and only the variables that function reads."""

    def __init__(self, function, specs: dict):
        super().__init__()
        self.serve = tf.function(function, input_signature=[specs])
        # Tracing once tells which variables the part reads; only those are saved with it.
        self.part_variables = list(self.serve.get_concrete_function().variables)


def scored_heads(model) -> list[str]:
    """The item part's scores: ctr (and cvr, ctcvr of an ESMM ctr head) and l2r, those configured."""
    return [name for h in model.heads if h.task in ("ctr", "l2r") for name in h.score_names]


def make_parts(model, contract: Contract, xla: bool = True) -> dict[str, ServingPart]:
    """The user, item and whole serving parts of a representation model.

    Args:
      xla: compile the user representation's network with XLA (not the id hashing, which XLA
        lacks), in the user part and the whole model alike: it fuses the LSTM's per-step work,
        several times faster for one user; the item scoring, a few matrix products over many
        rows, is left as it is (XLA made it slower).
    """
    if not hasattr(model, "user_representation") or not hasattr(model, "score_items"):
        raise ValueError(f"{type(model).__name__} has no user representation to split on "
                         "(only DUPN variants and representation baselines export)")
    if not scored_heads(model):
        raise ValueError("the model has neither a ctr nor an l2r head to score items with")

    represent = tf.function(lambda hashed: model.user_representation(hashed, training=False),
                            jit_compile=xla)

    def user(inputs):
        return {REPRESENTATION: represent(hash_features(inputs, contract))}

    # The sharing structure (mmoe, ple: experts and gates over the representation) runs in the
    # item part, inside score_items: so the item part takes the one shared representation
    # whatever the structure (the user part's output stays the universal representation that
    # transfer and analysis read), and score_items mixes a [1, D] user's experts once before
    # repeating them for the candidates.
    def item(inputs):
        candidates = hash_features({k: inputs[k] for k in ITEM_FEATURES}, contract)
        return model.score_items(inputs[REPRESENTATION], candidates)

    def whole(inputs):
        hashed = hash_features(inputs, contract)
        return model.score_items(represent(hashed), hashed)

    width = model.user_representation(
        hash_features({k: tf.zeros([1, *s.shape[1:]], s.dtype) for k, s in
                       input_specs(contract, USER_FEATURES).items()}, contract)).shape[-1]
    item_specs = {**input_specs(contract, ITEM_FEATURES),
                  REPRESENTATION: tf.TensorSpec([None, width], tf.float32, name=REPRESENTATION)}
    return {"user": ServingPart(user, input_specs(contract, USER_FEATURES)),
            "item": ServingPart(item, item_specs),
            "whole": ServingPart(whole, input_specs(contract, USER_FEATURES + ITEM_FEATURES))}


def export(model, contract: Contract, out, source: str = "", xla: bool = True) -> dict:
    """Writes OUT/user, OUT/item, OUT/whole and OUT/export.json; returns export.json's content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = make_parts(model, contract, xla)
    for name, part in parts.items():
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        # Serving needs no gradients: the LSTM's hand-written backward pass stays out.
        tf.saved_model.save(part, str(target), signatures={"serving_default": part.serve},
                            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
    info = {"source": source, "heads": scored_heads(model), "user_part_xla": xla,
            "inputs": {"user": list(USER_FEATURES), "item": [REPRESENTATION, *ITEM_FEATURES],
                       "whole": list(USER_FEATURES + ITEM_FEATURES)},
            "outputs": {"user": [REPRESENTATION], "item": scored_heads(model),
                        "whole": scored_heads(model)},
            "contract": {"sequence_length": contract.sequence_length, "tag_slots": contract.tag_slots,
                         "query_terms": contract.query_terms, "rank_features": contract.rank_features}}
    (out / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def load_part(export_dir, part: str):
    """The serving function of an exported part: callable(**raw features) -> dict of tensors."""
    return tf.saved_model.load(str(Path(export_dir) / part)).signatures["serving_default"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dupn export", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--work", help="work directory (its published model is exported)")
    parser.add_argument("--model", help="model dir to export (default: WORK/published/LATEST)")
    parser.add_argument("--out", required=True, help="folder for user/, item/, whole/")
    parser.add_argument("--no-xla", action="store_true",
                        help="do not XLA-compile the user part (for servers built without XLA)")
    args = parser.parse_args(argv)
    from pipeline.training.checkpoints import load_model
    from pipeline.layout import published_model_dir
    try:
        if not args.model and not args.work:
            raise ValueError("give --work or --model")
        model_dir = Path(args.model) if args.model else published_model_dir(args.work)
        config, model = load_model(model_dir)
        info = export(model, Contract.from_config(config), args.out, source=str(model_dir),
                      xla=not args.no_xla)
    except (FileNotFoundError, ValueError) as err:
        print(f"dupn export: {err}", file=sys.stderr)
        return 1
    print(f"dupn export: {model_dir} -> {args.out}/{{{','.join(PARTS)}}} "
          f"(scores: {', '.join(info['heads'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
