"""`dupn export`: three SavedModels of a published model for serving: user part, item part and whole.

    dupn export --work WORK [--model MODEL_DIR] --out DIR [--version N] [--replace] [--xla]

  DIR/user/<version>/   behaviour sequence, query and profile -> user_representation [B, shared_dim]
  DIR/item/<version>/   user_representation ([B, D], or [1, D] for one user's candidates) + the
                        candidates' item and ranking features -> ctr, l2r [B] (with model.esmm also
                        cvr, ctcvr; model.sharing's experts and gates run here)
  DIR/whole/<version>/  every feature of each candidate row -> the same scores (the user part
                        recomputed per row)
  DIR/export.json       what was exported last: source, version, heads, inputs, contract sizes
The layout TF Serving loads (model_base_path DIR/user, DIR/item; docs/OPERATIONS.md): the version
is an integer, the model's global step (or the time of the export), and older versions stay.
Signatures of every part:
  serving_default  the contract's raw values under the contract's names: string ids are hashed
                   inside (features.tfrecord.hash_features), so clients never see hash tables.
  from_examples    `examples`: serialized tf.Examples as the Beam job writes them, parsed by the
                   feature contract (the item part also takes user_representation).
Each version carries warm-up requests (assets.extra/tf_serving_warmup_requests), one per signature.
A request for one user and K candidates runs the user part once and the item part on K rows.
The user part is portable by default; --xla compiles its network with XLA (about 7x faster for
one user, docs/BENCHMARKS.md), which servers built without XLA's CPU JIT cannot run.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf

from features.contract import Contract
from features.tfrecord import encode_example, hash_features, parse_batch
from pipeline.dispatch import command_parser
from pipeline.serving.warmup import predict_log, write_warmup

USER_FEATURES = ("seq_item_id", "seq_shop_id", "seq_brand_id", "seq_category_id", "seq_tags",
                 "seq_type", "seq_scene", "seq_time_bucket", "query", "age_bucket", "gender")
ITEM_FEATURES = ("item_id", "shop_id", "brand_id", "category_id", "tags", "rank_features")
REPRESENTATION = "user_representation"
PARTS = ("user", "item", "whole")
DEFAULT_SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "from_examples"
EXAMPLES = "examples"   # the serialized tf.Examples input of from_examples
TF_DTYPES = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}


def input_specs(contract: Contract, names) -> dict[str, tf.TensorSpec]:
    """name -> TensorSpec [None, *shape] of the feature's raw dtype (ids as strings)."""
    return {n: tf.TensorSpec([None, *contract.features[n].shape],
                             TF_DTYPES[contract.features[n].dtype], name=n) for n in names}


class ServingPart(tf.Module):
    """One exported part: its serving functions (raw tensors, serialized examples) and only the
    variables they read."""

    def __init__(self, function, specs: dict, parse, extra: tuple[str, ...] = ()):
        """function: raw inputs -> outputs; parse: serialized examples -> the contract's raw
        values; extra: inputs of `specs` the examples do not hold (the item part's representation)."""
        super().__init__()
        self.specs = specs
        self.serve = tf.function(function, input_signature=[specs])

        def from_examples(inputs):
            raw = parse(inputs[EXAMPLES])
            return function({k: inputs[k] if k in extra else raw[k] for k in specs})

        self.serve_examples = tf.function(from_examples, input_signature=[{
            EXAMPLES: tf.TensorSpec([None], tf.string, name=EXAMPLES),
            **{k: specs[k] for k in extra}}])
        # Tracing once tells which variables the part reads; only those are saved with it.
        self.part_variables = list(self.serve.get_concrete_function().variables)

    def signatures(self) -> dict:
        return {DEFAULT_SIGNATURE: self.serve, EXAMPLES_SIGNATURE: self.serve_examples}

    def warmup_logs(self, name: str, contract: Contract) -> list:
        """One PredictionLog per signature on one padded example (the contract's defaults)."""
        padded = {k: np.full([1, *spec.shape[1:]], b"" if spec.dtype == tf.string else 0,
                             dtype=object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype)
                  for k, spec in self.specs.items()}
        extra = {k: padded[k] for k in self.serve_examples.input_signature[0] if k != EXAMPLES}
        return [predict_log(name, DEFAULT_SIGNATURE, padded),
                predict_log(name, EXAMPLES_SIGNATURE,
                            {EXAMPLES: np.array([encode_example({}, contract)], dtype=object), **extra})]


def scored_heads(model) -> list[str]:
    """The item part's scores: ctr (and cvr, ctcvr of an ESMM ctr head) and l2r, those configured."""
    return [name for h in model.heads if h.task in ("ctr", "l2r") for name in h.score_names]


def make_parts(model, contract: Contract, xla: bool = False) -> dict[str, ServingPart]:
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

    def parse(serialized):
        return parse_batch(serialized, contract, hash_ids=False)

    return {"user": ServingPart(user, input_specs(contract, USER_FEATURES), parse),
            "item": ServingPart(item, item_specs, parse, extra=(REPRESENTATION,)),
            "whole": ServingPart(whole, input_specs(contract, USER_FEATURES + ITEM_FEATURES), parse)}


def export(model, contract: Contract, out, source: str = "", xla: bool = False,
           version: int | None = None) -> dict:
    """Writes OUT/<part>/<version>/ for user, item and whole, and OUT/export.json; returns
    export.json's content.

    Args:
      version: the integer version folder (default: the time of the export, in seconds); an
        existing folder of that version is replaced, other versions are left as they are.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    version = int(time.time()) if version is None else int(version)
    parts = make_parts(model, contract, xla)
    for name, part in parts.items():
        target = out / name / str(version)
        if target.exists():
            shutil.rmtree(target)
        # Serving needs no gradients: the LSTM's hand-written backward pass stays out.
        tf.saved_model.save(part, str(target), signatures=part.signatures(),
                            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
        write_warmup(target, part.warmup_logs(name, contract))
    info = {"source": source, "version": version, "heads": scored_heads(model), "user_part_xla": xla,
            "signatures": [DEFAULT_SIGNATURE, EXAMPLES_SIGNATURE],
            "inputs": {"user": list(USER_FEATURES), "item": [REPRESENTATION, *ITEM_FEATURES],
                       "whole": list(USER_FEATURES + ITEM_FEATURES)},
            "outputs": {"user": [REPRESENTATION], "item": scored_heads(model),
                        "whole": scored_heads(model)},
            "contract": {"sequence_length": contract.sequence_length, "tag_slots": contract.tag_slots,
                         "query_terms": contract.query_terms, "rank_features": contract.rank_features}}
    (out / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def versions(export_dir, part: str) -> list[int]:
    """The integer version folders of an exported part, oldest first."""
    folder = Path(export_dir) / part
    found = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()] \
        if folder.is_dir() else []
    return sorted(found)


def part_dir(export_dir, part: str, version: int | None = None) -> Path:
    """EXPORT_DIR/<part>/<version>: the given version, else the newest (as TF Serving picks)."""
    if version is None:
        found = versions(export_dir, part)
        if not found:
            raise FileNotFoundError(f"{Path(export_dir) / part}: no version folder (run dupn export)")
        version = found[-1]
    return Path(export_dir) / part / str(version)


def load_part(export_dir, part: str, version: int | None = None, signature: str = DEFAULT_SIGNATURE):
    """A signature of an exported part: callable(**inputs) -> dict of tensors."""
    return tf.saved_model.load(str(part_dir(export_dir, part, version))).signatures[signature]


def model_version(model_dir) -> int | None:
    """The global step of a model dir (run.json, else its latest checkpoint's number), or None."""
    from pipeline.layout import read_json
    from pipeline.training.checkpoints import latest_checkpoint
    from pipeline.training.train import RUN_FILE
    step = read_json(Path(model_dir) / RUN_FILE, {}).get("global_step")
    if step is None and latest_checkpoint(model_dir):
        step = int(latest_checkpoint(model_dir).rsplit("-", 1)[-1])
    return int(step) if step is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("dupn export", __doc__)
    parser.add_argument("--work", help="work directory (its published model is exported)")
    parser.add_argument("--model", help="model dir to export (default: WORK/published/LATEST)")
    parser.add_argument("--out", required=True, help="folder for user/, item/, whole/ (their versions)")
    parser.add_argument("--version", type=int,
                        help="version folder (default: the model's global step, else the time)")
    parser.add_argument("--replace", action="store_true",
                        help="replace version folders of that number already in --out")
    parser.add_argument("--xla", action="store_true",
                        help="XLA-compile the user part (faster; needs a server built with XLA)")
    args = parser.parse_args(argv)
    from pipeline.training.checkpoints import load_model
    from pipeline.layout import published_model_dir
    try:
        if not args.model and not args.work:
            raise ValueError("give --work or --model")
        model_dir = Path(args.model) if args.model else published_model_dir(args.work)
        version = args.version if args.version is not None else model_version(model_dir)
        # A version folder may be in service (TF Serving polls --out): replaced only when asked.
        taken = [str(Path(args.out) / p / str(version)) for p in PARTS
                 if version is not None and (Path(args.out) / p / str(version)).exists()]
        if taken and not args.replace:
            raise FileExistsError(f"{', '.join(taken)} already exist: give another --version, or "
                                  "--replace to overwrite them")
        config, model = load_model(model_dir)
        info = export(model, Contract.from_config(config), args.out, source=str(model_dir),
                      xla=args.xla, version=version)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"dupn export: {err}", file=sys.stderr)
        return 1
    print(f"dupn export: {model_dir} -> {args.out}/{{{','.join(PARTS)}}}/{info['version']} "
          f"(scores: {', '.join(info['heads'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
