"""A damaged file or a mistyped flag is one line naming it, with the exit code the docs give,
never a traceback: a truncated examples shard, a truncated manifest, an unknown runner, a bad day."""
from __future__ import annotations

import glob

from pipeline.beam.build_examples import build_examples
from pipeline.beam.build_examples import main as build_main
from pipeline.jobs import backfill, daily, jobrun
from pipeline.training import train
from train_helpers import DAYS, config_args, tiny_config, tiny_examples


def test_a_truncated_examples_shard_is_named_with_its_days_statistics(tmp_path, capsys):
    examples = tiny_examples(tmp_path, [DAYS[0]])
    shard = sorted(glob.glob(str(examples / "ctr" / f"dt={DAYS[0]}" / "*.tfrecord.gz")))[0]
    with open(shard, "rb") as f:
        data = f.read()
    with open(shard, "wb") as f:
        f.write(data[:600])     # cut inside an early record, which any order of reading reaches
    code = train.main(["--examples", str(examples), "--start", DAYS[0],
                       "--model-dir", str(tmp_path / "run"), *config_args()])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"dupn train: damaged examples: {shard}: " in err and "truncated record" in err
    assert str(examples / "_stats" / f"dt={DAYS[0]}.json") in err


def test_a_truncated_manifest_is_named(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "manifest.json").write_text('{"dates": {"2026-11-0')
    assert daily.main(["--raw", str(tmp_path), "--work", str(work), "--date", DAYS[1],
                       *config_args()]) == jobrun.EXIT_ERROR
    err = capsys.readouterr().err
    assert f"dupn daily: {work / 'manifest.json'}: not valid JSON (" in err and "Traceback" not in err


def test_an_unknown_runner_and_a_bad_day_name_their_flag(tmp_path, capsys):
    assert build_examples(tiny_config(), tmp_path, tmp_path / "ex", DAYS[0], runner="Nope") == 2
    assert "dupn build-examples: --runner Nope: Unexpected pipeline runner: Nope" in capsys.readouterr().err
    assert build_main(["--raw", str(tmp_path), "--out", str(tmp_path / "ex"), "--start", "2026-13-01",
                       *config_args()]) == 2
    assert "dupn build-examples: --start '2026-13-01' is not a day YYYY-MM-DD" in capsys.readouterr().err
    assert train.main(["--examples", str(tmp_path), "--start", DAYS[0], "--end", "soon",
                       "--model-dir", str(tmp_path / "run"), *config_args()]) == 2
    assert "dupn train: --end 'soon' is not a day YYYY-MM-DD" in capsys.readouterr().err
    assert backfill.main(["--raw", str(tmp_path), "--work", str(tmp_path / "w"), "--end", "xx",
                          "--days", "2", *config_args()]) == jobrun.EXIT_USAGE
    assert "dupn backfill: --end 'xx' is not a day YYYY-MM-DD" in capsys.readouterr().err
