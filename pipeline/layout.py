"""Where evaluation and the report find things in a work directory, without loading TensorFlow."""
from __future__ import annotations

import json
from pathlib import Path


def published_model_dir(work) -> Path:
    """WORK/published/<name> as named by WORK/published/LATEST (a name or an absolute path)."""
    latest = Path(work) / "published" / "LATEST"
    if not latest.exists():
        raise FileNotFoundError(f"{latest}: no published model (give --model DIR)")
    name = latest.read_text().strip()
    path = Path(name) if Path(name).is_absolute() else Path(work) / "published" / name
    if not name or not path.exists():
        raise FileNotFoundError(f"{latest} names '{name}', but {path} does not exist")
    return path


def read_manifest(work) -> dict | None:
    """WORK/manifest.json as written by the backfill and daily jobs, or None before the first run."""
    path = Path(work) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def find_raw(work) -> Path | None:
    """The raw-log root the daily jobs recorded in WORK/manifest.json (the latest run's), if any."""
    manifest = read_manifest(work)
    found = _find_key(manifest, "raw") if manifest is not None else None
    return Path(found) if found else None


def _find_key(node, key: str):
    """The last string value under `key` anywhere in a nested JSON value."""
    found = None
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, str):
                found = v
            else:
                found = _find_key(v, key) or found
    elif isinstance(node, list):
        for v in node:
            found = _find_key(v, key) or found
    return found
