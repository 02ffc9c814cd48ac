"""The TensorFlow-free encoder writes the bytes of TensorFlow's own (features.tfrecord.encode_example)."""
import random

import pytest

from features.example_bytes import FIELD_ORDER, encode_values, varint
from features.tfrecord import encode_example
from test_beam_fixtures import contract

STRINGS = ("", "a", "u1", "item-12345", "é中", "x" * 130)


def random_value(name, spec, rng):
    count = 1 if not spec.shape else rng.choice((0, 1, 3, 20, 100))
    if spec.dtype == "string":
        values = [rng.choice(STRINGS) for _ in range(count)]
    elif spec.dtype == "int64":
        values = [rng.choice((0, 1, 7, 127, 128, 300, 1_790_000_000, 2**40, -1)) for _ in range(count)]
    else:
        values = [rng.choice((0.0, 1.0, 0.1, -2.5, 1e-30, 3.4e38, 1e39)) for _ in range(count)]
    return tuple(values) if spec.shape else values[0]


@pytest.mark.parametrize("keys", sorted(FIELD_ORDER), ids=lambda k: ",".join(k[:2]))
def test_every_key_list_encodes_as_tensorflow_does(keys):
    c, rng, strings = contract(), random.Random(len(keys)), {}
    for _ in range(30):
        values = {name: random_value(name, c.features[name], rng) for name in keys}
        expected = encode_example(values, c)
        assert encode_values(values, c) == expected, values
        assert encode_values(values, c, strings) == expected, values     # cached strings


def test_varint_matches_protobuf():
    from google.protobuf.internal.encoder import _VarintBytes
    for n in (0, 1, 127, 128, 300, 2**31, 2**63 - 1):
        assert varint(n) == _VarintBytes(n)
    assert len(varint(-1)) == 10
