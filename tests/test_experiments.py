"""The paper's experiments: each writes its CSV and a real PNG; the attention grouping by hand."""
import math

import matplotlib.image
import numpy as np
import pytest

from pipeline import experiment_attention as attention


def assert_real_png(path):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{path} is not a PNG"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert pixels.std() > 0, f"{path} is blank"


def test_attention_by_type_and_bucket_by_hand():
    # Sequence 0: a click 1-5 min ago (weight .2) and a buy 5-30 min ago (.8); sequence 1: one
    # click 1-5 min ago (1.0). Relative weight = weight x sequence length (1 = uniform).
    weights = np.array([[0.2, 0.8, 0.0], [1.0, 0.0, 0.0]])
    types = np.array([[1, 4, 0], [1, 0, 0]])
    buckets = np.array([[2, 3, 0], [2, 0, 0]])
    cells = attention.mean_attention_by_type_and_bucket(weights, types, buckets)
    assert len(cells) == 4 * 8 and cells["count"].sum() == 3
    click = cells[(cells.behaviour == "click") & (cells.time_bucket == "<5m")].iloc[0]
    assert click["mean_weight"] == pytest.approx(0.6) and click["relative_weight"] == pytest.approx(0.7)
    assert click["count"] == 2
    buy = cells[(cells.behaviour == "buy") & (cells.time_bucket == "<30m")].iloc[0]
    assert buy["mean_weight"] == pytest.approx(0.8) and buy["relative_weight"] == pytest.approx(1.6)
    matrix = attention.heatmap_matrix(cells)
    assert matrix.shape == (4, 8)
    assert matrix[0, 1] == pytest.approx(0.7) and matrix[3, 2] == pytest.approx(1.6)
    assert np.isnan(matrix).sum() == 30 and math.isnan(matrix[1, 0])
