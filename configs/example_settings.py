"""The settings a day's examples depend on: recorded when they are built, compared before reuse.

Only what changes the examples' content counts: sequence length, lookback, tag and query slots,
ranking features, L2R weights and, when CTR samples come from behaviours, their negatives and seed.
Embedding sizes (ids are hashed inside the model) and shard counts do not.
"""
from __future__ import annotations

DATA_KEYS = ("sequence_length", "lookback_days", "l2r_weight_buy", "l2r_weight_click", "l2r_weight_none",
             "ctr_from_behaviors")
NEGATIVE_KEYS = ("ctr_negatives", "ctr_negative_pool")
FEATURE_KEYS = ("tags_per_item", "query_terms", "rank_features")


def example_settings(config) -> dict:
    """{"data.sequence_length": 100, ...}: flat, so that a difference names the key to set."""
    settings = {f"data.{k}": getattr(config.data, k) for k in DATA_KEYS}
    settings.update({f"features.{k}": getattr(config.features, k) for k in FEATURE_KEYS})
    if config.data.ctr_from_behaviors:
        settings.update({f"data.{k}": getattr(config.data, k) for k in NEGATIVE_KEYS})
        settings["runtime.seed"] = config.runtime.seed
    return settings


def settings_difference(recorded: dict | None, current: dict) -> str | None:
    """None when equal; else 'features.tags_per_item 4 -> 8, ...' (recorded -> current)."""
    if recorded is None:
        return "no settings recorded"
    changed = [f"{k} {recorded.get(k, '(unset)')} -> {current.get(k, '(unset)')}"
               for k in sorted(set(recorded) | set(current)) if recorded.get(k) != current.get(k)]
    return ", ".join(changed) or None
