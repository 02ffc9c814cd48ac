"""The Beam job publishes a day as one step: a crash between its folders leaves no day taken for complete."""
import pytest

from pipeline.beam import write
from pipeline.rawlogs.rows import day_start
from test_beam_fixtures import DAYS, behavior, run_job, small_world, tree_bytes, write_rows

DAY = DAYS[2]


class Crash(Exception):
    """Stands for the process dying at that moment."""


def day_files(root, prefix):
    return {k: v for k, v in tree_bytes(root).items() if k.startswith(prefix)}


def test_a_crash_between_a_days_folders_leaves_it_without_stats_and_the_next_run_repairs_it(
        tmp_path, monkeypatch):
    raw, out = tmp_path / "raw", tmp_path / "out"
    small_world(raw)
    assert run_job(raw, out, DAY, DAY) == 0
    before = tree_bytes(out)
    # new rows for the day: its rebuild differs in every task that sees u1's history
    s = day_start(DAY)
    write_rows(raw, "behaviors", DAY, [behavior("u1", j, s + 600 + j) for j in range(4)], name="late")

    real = write.replace_local

    def crash_at_l2r(staged, dest, trash):
        if f"l2r/dt={DAY}" in dest:
            raise Crash(dest)
        return real(staged, dest, trash)

    with monkeypatch.context() as patched:
        patched.setattr(write, "replace_local", crash_at_l2r)
        with pytest.raises(Crash):
            run_job(raw, out, DAY, DAY)
    mixed = tree_bytes(out)
    ctr, l2r = f"ctr/dt={DAY}/", f"l2r/dt={DAY}/"
    assert day_files(out, ctr) != {k: v for k, v in before.items() if k.startswith(ctr)}  # new
    assert day_files(out, l2r) == {k: v for k, v in before.items() if k.startswith(l2r)}  # old
    # the day's statistics are gone with the first folder: no reader takes the mix for a day
    assert f"_stats/dt={DAY}.json" in before and f"_stats/dt={DAY}.json" not in mixed

    assert run_job(raw, out, DAY, DAY) == 0
    assert run_job(raw, tmp_path / "clean", DAY, DAY) == 0
    assert tree_bytes(out) == tree_bytes(tmp_path / "clean")
