"""`dupn bench train --json` runs end to end at a tiny size and reports its figures."""
import json

from pipeline.bench import commands as bench
from pipeline.bench import train as bench_train


def test_bench_train_prints_one_json_with_the_figures(capsys):
    code = bench.main(["train", "--config", "small", "--set", "data.sequence_length=6",
                       "--steps", "1", "--warmup", "0", "--batch", "8", "--matmul-size", "128",
                       "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("dupn_samples_per_s", "lstm_samples_per_s", "ratio", "achieved_gflops",
                "peak_gflops"):
        assert result[key] > 0, key
    assert abs(result["ratio"] - result["lstm_step_s"] / result["dupn_step_s"]) < 0.01
    assert result["batch"] == 8 and result["sequence_length"] == 6
    assert result["input_width"] == 16 + 8 + 8 + 8 + 8 + 8 + 4 + 8   # e_t + p_t of small.yaml


def test_flop_counts_by_hand():
    # one step, batch 1, N 1: LSTM input 2*(De+Dp)*4U, recurrence 2*U*4U, attention 2*((U+Dp)*A+A)
    class M:
        lstm_units, attention_units = 2, 3

    class C:
        sequence_length, item_embedding_dim, property_embedding_dim = 1, 4, 1

    forward = 2 * (5 * 8 + 2 * 8 + 3 * 3 + 3)
    assert bench_train.dupn_step_flops(C, M, 1) == 3 * forward
    assert bench_train.lstm_step_flops(1, 5, 2, 1) == 2 * (3 * 2 * 8 + 2 * 5 * 8)


def test_unknown_benchmark_is_refused(capsys):
    assert bench.main(["nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
