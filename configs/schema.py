"""Typed, nested configuration of DUPN: data, features, model, trainer and runtime.

Each field's metadata may carry `min`, `max` or `choices`; the loader checks them and
names the offending key and file in a one-line error.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from features.contract import EMBEDDINGS, TASKS
VARIANTS = (
    "dupn-all", "dupn-nobp", "dupn-bplstm", "dupn-bpatt", "dupn-w2v",
    "wide", "wide-deep", "dssm", "cnn-max",
)


def _int(default: int, lo: int = 1, hi: int | None = None):
    return field(default=default, metadata={"min": lo, "max": hi})


def _float(default: float, lo: float = 0.0, hi: float | None = None):
    return field(default=default, metadata={"min": lo, "max": hi})


def _choice(default: str, choices):
    return field(default=default, metadata={"choices": tuple(choices)})


@dataclass
class DataConfig:
    """How raw logs become examples."""
    sequence_length: int = _int(100)          # N: behaviours kept before each sample
    lookback_days: int = _int(7, lo=0)        # history read before a window's first day
    max_bad_share: float = _float(0.01, hi=1.0)  # the Beam job fails above this share of bad rows
    l2r_weight_buy: float = _float(5.0)       # L2R sample weight by what the user did
    l2r_weight_click: float = _float(1.0)
    l2r_weight_none: float = _float(1.0)
    shards_per_day: int = _int(4)             # TFRecord files per task and day
    # The Beam job: "blocks" (Arrow blocks, columnar) or "rows" (one element per row, the
    # reference kept until the block path has proved itself); the same bytes either way.
    beam_path: str = _choice("blocks", ("blocks", "rows"))
    # Block path shuffle keys: a group holds about rows / shards (docs/BEAM.md, "How it scales").
    user_shards: int = _int(16)
    item_shards: int = _int(16)
    # Output compression: gzip level 6 with zlib writes the reference bytes; isal (pip install
    # 'dupn[fast-gzip]') at level 1 is several times faster, files ~15 % larger, same records.
    gzip_level: int = _int(6, lo=0, hi=9)
    gzip_encoder: str = _choice("zlib", ("zlib", "isal"))
    holdout_share: float = _float(0.1, hi=0.5)  # share of a day held out when no next day exists
    # Logs without impressions (Taobao UserBehavior): CTR samples made from behaviours, each
    # behaviour a positive, with negatives drawn from the day's items (seeded by runtime.seed).
    ctr_from_behaviors: bool = False
    ctr_negatives: int = _int(4)              # negatives per behaviour-made positive
    ctr_negative_pool: int = _int(10_000)     # items per day the negatives are drawn from


@dataclass
class Table:
    """An embedding table: ids are hashed into `buckets` rows (row 0 is padding) of width `dim`.

    embedding: plain (a row per bucket; more ids than buckets share rows) or qr (the same rows as
    two tables of half the buckets, each id a unique pair of rows: docs/MODEL.md, "Hashed ids")."""
    buckets: int = _int(1000, lo=2)
    dim: int = _int(16)
    embedding: str = _choice("plain", EMBEDDINGS)


@dataclass
class FeaturesConfig:
    """Shapes and tables of the feature contract (features/contract.py)."""
    tags_per_item: int = _int(4)              # item tags kept; one more slot holds the price token
    query_terms: int = _int(6)
    rank_features: int = _int(8)              # length of the ranking-feature vector of impressions
    item_id: Table = field(default_factory=lambda: Table(1_000_003, 32))
    shop_id: Table = field(default_factory=lambda: Table(100_003, 24))
    brand_id: Table = field(default_factory=lambda: Table(100_003, 24))
    category_id: Table = field(default_factory=lambda: Table(20_011, 16))
    tags: Table = field(default_factory=lambda: Table(10_007, 28))
    query: Table = field(default_factory=lambda: Table(50_021, 32))
    talent_id: Table = field(default_factory=lambda: Table(50_021, 32))
    talent_type: Table = field(default_factory=lambda: Table(101, 8))
    type_dim: int = _int(16)                  # behaviour type embedding
    scene_dim: int = _int(16)
    time_bucket_dim: int = _int(16)
    age_dim: int = _int(8)
    gender_dim: int = _int(4)


@dataclass
class HeadConfig:
    """One task head: its name (a task), loss weight and MLP widths."""
    name: str = _choice("ctr", TASKS)
    weight: float = _float(1.0)
    hidden_units: list[int] = field(default_factory=lambda: [256, 128, 64])


@dataclass
class ModelConfig:
    variant: str = _choice("dupn-all", VARIANTS)
    lstm_units: int = _int(128)               # also the width of the attention-pooled representation
    peepholes: bool = False
    attention_units: int = _int(64)
    shared_dim: int = _int(256)               # representation joined with the profile
    dropout: float = _float(0.1, hi=0.9)
    l2: float = _float(1e-6)
    # How heads share the user representation (models/sharing.py): hard (DUPN: all read it),
    # shared-bottom (one MLP, then towers), mmoe (experts, a softmax gate per task), ple (CGC levels).
    sharing: str = _choice("hard", ("hard", "shared-bottom", "mmoe", "ple"))
    experts: int = _int(4)                    # mmoe: shared experts; ple: shared experts per level
    task_experts: int = _int(1)               # ple: task-specific experts per task and level
    expert_units: list[int] = field(default_factory=lambda: [128])   # an expert's MLP widths
    ple_levels: int = _int(2)                 # ple: stacked CGC levels
    # ESMM on the CTR head: pCTCVR = pCTR x pCVR learnt with the impression's buy label over
    # every impression (Ma et al., SIGIR 2018); the ctr head then also reports cvr/ctcvr AUC.
    esmm: bool = False
    # DUPN variants (baselines ignore it): pool the history's item embeddings with the attention
    # too and give the ctr head their match with the candidate; docs/QUALITY.md (CTR AUC 0.64 -> 0.72).
    interest_match: bool = False
    # ... as that many interests: the attention scores each step that many times on its one tanh
    # layer; the first weighting also pools the LSTM states (docs/QUALITY.md).
    interest_heads: int = _int(1)
    # DUPN, dssm, cnn-max: the ctr head also reads the impression's ranking features (the l2r
    # head's input), as the wide baselines' logits always do; docs/QUALITY.md (CTR 0.72 -> 0.75).
    ctr_rank_features: bool = False
    # DUPN variants: candidate-aware (target) attention of the ctr head over per-step keys of the
    # history that the user part computes once per request (models/target_attention.py), this
    # many units wide; 0: none (the paper's model). Keys read the behaviours' properties when the
    # variant's attention does (dupn-all, dupn-bpatt).
    target_attention: int = _int(0, lo=0)
    # DUPN variants: the ctr head also reads this many property-weighted counts per field (item,
    # shop, brand, category, tags) of the history's behaviours sharing the candidate's id, from
    # per-step ids the user part carries (models/id_match.py); 0: none (the paper's model).
    id_match: int = _int(0, lo=0)
    # The id match's weights take either sign: a strength of the properties times a positive
    # decay, so a recent buy can count against the candidate's category while a cart counts for
    # it; counts are squashed by asinh instead of log1p. false: positive weights only.
    id_match_signed: bool = False
    # DUPN variants: the ctr head also reads how many of the query's terms equal the candidate's
    # tags, brand, category or shop (exact, on fingerprints of the raw strings in one space; the
    # user part carries the query's), models/query_match.py; false: the paper's model.
    query_match: bool = False
    heads: list[HeadConfig] = field(default_factory=lambda: [
        HeadConfig("ctr", 1.0, [256, 128, 64]),
        HeadConfig("l2r", 1.0, [128, 64]),
        HeadConfig("talent", 1.0, [128, 64]),
        HeadConfig("power", 1.0, [128]),
    ])


@dataclass
class TrainerConfig:
    batch_size: int = _int(1024)
    optimizer: str = _choice("adagrad", ("adagrad", "adam", "sgd"))
    learning_rate: float = _float(0.05)
    epochs: int = _int(1)
    # With epochs > 1: users held out to stop when a pass stops helping them
    # (pipeline/training/stopping.py); one pass holds nothing out.
    validation_share: float = _float(0.1, hi=0.5)
    # The momentum of the moving average of the weights that training ends with and publishes
    # (models/weight_average.py); 0: the last step's weights.
    weight_average: float = _float(0.0, hi=0.9999)
    steps_per_execution: int = _int(10)
    checkpoint_every_steps: int = _int(500)
    shuffle_buffer: int = _int(10_000)
    # How task losses are weighted (models/balance.py): fixed (heads' weights), uncertainty
    # (Kendall 2018), gradnorm (Chen 2018), dwa (Liu 2019), pcgrad (Yu 2020).
    loss_balance: str = _choice("fixed", ("fixed", "uncertainty", "gradnorm", "dwa", "pcgrad"))
    gradnorm_alpha: float = _float(1.5)       # gradnorm: restoring-force strength
    dwa_temperature: float = _float(2.0, lo=0.01)   # dwa: softmax temperature over loss ratios
    # The daily job refuses a model this much worse, when the drop also exceeds its standard error.
    publish_margin: float = _float(0.01, hi=1.0)
    # The gate's headline metric per task: auc (power: accuracy), or gauc (per-user AUC; l2r:
    # NDCG@10 per request; power: accuracy). docs/OPERATIONS.md.
    publish_metric: str = _choice("auc", ("auc", "gauc"))
    keep_published: int = _int(3)


@dataclass
class RuntimeConfig:
    # Beam runner; Dataflow/Flink/Spark by flag. The local default passes elements between steps
    # as Python objects; Beam's DirectRunner (its FnApiRunner) encodes and copies every one:
    # 10-12 % fewer rows/s and 20-30 % more peak memory on the example job (docs/BENCHMARKS.md).
    runner: str = "BundleBasedDirectRunner"
    direct_num_workers: int = _int(2, lo=0)   # local runner processes (0: one per core)
    # Beam's DirectRunner: one process, threads or processes (either of the last two runs the
    # DirectRunner whatever `runner` says). On 2 cores one process is faster: multi_processing
    # moves every element through gRPC (~1.9x the CPU; docs/BENCHMARKS.md).
    direct_running_mode: str = _choice(
        "in_memory", ("in_memory", "multi_threading", "multi_processing"))
    seed: int = _int(1, lo=0)
    # Peak memory the local example job may use: it builds its examples in as many passes over
    # user shards as keep its peak under this (beam/passes.py; docs/BEAM.md, "Memory"). Sized for
    # a 24 GB machine, leaving 4 GB to the OS and other processes; the minimum is the job's base.
    # The job plans with less where the machine has less free when it starts (passes.usable_budget_gb).
    memory_budget_gb: float = _float(20.0, lo=2.0)


@dataclass
class DriftConfig:
    """The daily job's drift gate (pipeline/jobs/drift.py): a day whose statistics leave these
    bounds around the median of the days before it is not trained on (exit 5)."""
    enabled: bool = True
    window_days: int = _int(7)                 # earlier days compared with
    min_days: int = _int(3)                    # fewer earlier days with statistics: no check
    # Tables and tasks smaller than this (rows, samples; median or the day's) are not compared:
    # their day-to-day noise is wider than the bounds. A missing table is refused whatever its size.
    min_count: int = _int(1000, lo=0)
    max_rows_ratio: float = _float(3.0, lo=1.0)      # a table's rows within median / r .. median * r
    max_samples_ratio: float = _float(3.0, lo=1.0)   # a task's samples, the same
    # a task's label rate, the same, when it is also 4 standard errors off (small days are noisy)
    max_rate_ratio: float = _float(2.0, lo=1.0)
    max_rejected_share_rise: float = _float(0.005, hi=1.0)  # a table's rejected share above the median


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
