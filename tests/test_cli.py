"""The `dupn` command: usage, unknown commands, dispatch to a module's main(argv)."""
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli


def test_no_arguments_print_usage(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dupn COMMAND")
    for name in cli.COMMANDS:
        assert f"  {name} " in out, name
    assert cli.main(["--help"]) == 0 and "usage: dupn" in capsys.readouterr().out


def test_unknown_command_returns_2(capsys):
    assert cli.main(["fly"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'fly'" in err and "usage: dupn" in err


def test_commands_dispatch_to_their_module(capsys, tmp_path):
    code = cli.main(["import-taobao", "--csv", str(tmp_path / "missing.csv"), "--out", str(tmp_path)])
    assert code == 2 and "missing.csv: no such file" in capsys.readouterr().err


def run_help(argv) -> None:
    """Runs `dupn ARGV --help` in this process; argparse's --help exits 0."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code in (0, None), argv


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_reaches_its_own_module(name, capsys):
    # Through the real table: a misspelt module prints "not built yet" and returns 2, two swapped
    # entries print the other command's usage.
    run_help([name, "--help"])
    captured = capsys.readouterr()
    assert "not built yet" not in captured.err
    assert captured.out.startswith(f"usage: dupn {name} "), captured.out[:200]


@pytest.mark.parametrize("name", ["pipeline", "memory", "train", "serve", "scale"])
def test_every_benchmark_reaches_its_own_module(name, capsys):
    from pipeline.bench import commands as bench
    assert set(bench.BENCHMARKS) == {"pipeline", "memory", "train", "serve", "scale"}
    run_help(["bench", name, "--help"])
    captured = capsys.readouterr()
    assert "not built yet" not in captured.err
    assert captured.out.startswith(f"usage: dupn bench {name} "), captured.out[:200]


def test_installed_console_script():
    dupn = Path(sys.executable).with_name("dupn")
    result = subprocess.run([str(dupn)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "import-taobao" in result.stdout
    result = subprocess.run([str(dupn), "nonsense"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown command 'nonsense'" in result.stderr


def test_bench_shares_the_dispatch_usage_and_unknown_names(capsys):
    from pipeline.bench import commands as bench
    assert bench.main([]) == 0
    assert capsys.readouterr().out.startswith("usage: dupn bench NAME [options]")
    assert bench.main(["fly"]) == 2
    assert "dupn bench: unknown benchmark 'fly'" in capsys.readouterr().err
