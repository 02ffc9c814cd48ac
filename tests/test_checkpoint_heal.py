"""Damaged checkpoints heal: the newest readable one is restored and the skipped ones are named;
when none can be read, the error names each, not a bare IndexError."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import layout
from pipeline.training.checkpoints import UnreadableCheckpoints, checkpoint_paths, load_model
from train_helpers import DAYS


def truncate(prefix: str) -> None:
    data = next(Path(prefix).parent.glob(Path(prefix).name + ".data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def test_a_truncated_latest_checkpoint_falls_back_to_the_one_before(shared_work, tmp_path, capsys):
    work, _ = shared_work
    run = tmp_path / "run"
    shutil.copytree(layout.run_dir(work, f"{DAYS[1]}-backfill"), run)
    newest, before = checkpoint_paths(run)[:2]
    truncate(newest)
    load_model(run)
    err = capsys.readouterr().err
    assert f"skipped damaged checkpoint {newest}" in err and f"using {before}" in err
    for prefix in checkpoint_paths(run)[1:]:
        truncate(prefix)
    with pytest.raises(UnreadableCheckpoints, match=f"no readable checkpoint: {newest} .*{before}"):
        load_model(run)


def test_a_truncated_published_copy_is_named(shared_work, tmp_path, capsys):
    from pipeline.serving import export
    work, _ = shared_work
    copy = tmp_path / "work"
    shutil.copytree(layout.published_root(work), layout.published_root(copy))
    published = layout.published_model_dir(copy)
    truncate(checkpoint_paths(published)[0])
    assert export.main(["--work", str(copy), "--out", str(tmp_path / "export")]) == 1
    assert f"{published / 'checkpoints'}: no readable checkpoint" in capsys.readouterr().err
