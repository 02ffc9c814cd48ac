"""The Beam job publishes a day as one step: a process killed between its folders leaves no day
taken for complete, and the next run repairs the day and removes what the killed run left."""
import signal
import textwrap

from pipeline.rawlogs.rows import day_start
from test_beam_fixtures import DAYS, behavior, run_job, small_world, tree_bytes, write_rows
from train_helpers import run_python

DAY = DAYS[2]

# Runs the job in a process of its own that SIGKILLs itself as the day's l2r folder is about to
# move. A real kill, not an exception: an exception would run the job's cleanup (its `finally`
# deletes the run's staging folder) and so hide what a killed run leaves behind.
KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, "tests")
    from pipeline.beam import write
    from test_beam_fixtures import run_job
    raw, out, day = sys.argv[1:]
    real = write.replace_local

    def die_at_l2r(staged, dest, trash):
        if f"l2r/dt={day}" in dest:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(staged, dest, trash)

    write.replace_local = die_at_l2r
    run_job(raw, out, day, day)
""")


def day_files(tree, prefix):
    return {k: v for k, v in tree.items() if k.startswith(prefix)}


def test_a_kill_between_a_days_folders_leaves_it_without_stats_and_the_next_run_repairs_it(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    small_world(raw)
    assert run_job(raw, out, DAY, DAY) == 0
    before = tree_bytes(out)
    # new rows for the day: its rebuild differs in every task that sees u1's history
    s = day_start(DAY)
    write_rows(raw, "behaviors", DAY, [behavior("u1", j, s + 600 + j) for j in range(4)], name="late")

    killed = run_python(["-c", KILLED_RUN, str(raw), str(out), DAY], timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    mixed = tree_bytes(out)
    ctr, l2r = f"ctr/dt={DAY}/", f"l2r/dt={DAY}/"
    assert day_files(mixed, ctr) != day_files(before, ctr)     # new
    assert day_files(mixed, l2r) == day_files(before, l2r)     # old
    # the day's statistics are gone with the first folder: no reader takes the mix for a day
    assert f"_stats/dt={DAY}.json" in before and f"_stats/dt={DAY}.json" not in mixed
    assert day_files(mixed, "_tmp/")                           # the killed run's staging is left

    assert run_job(raw, out, DAY, DAY) == 0
    assert run_job(raw, tmp_path / "clean", DAY, DAY) == 0
    assert tree_bytes(out) == tree_bytes(tmp_path / "clean")   # the day whole, no _tmp left
