"""Item join, day tails and sample building: in-memory pipelines on hand-built rows, and leakage."""
import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from tensorflow.core.example import example_pb2

from features.contract import BEHAVIOR_INDEX, TASK_INDEX, item_tag_slots, time_bucket
from pipeline.beam.join import BEHAVIORS, IMPRESSIONS, MISSING, JoinItems, item_features
from pipeline.rawlogs.rows import day_start
from pipeline.beam.samples import EXAMPLES, STATS, BuildSamples, LastN, SampleSpec, draw_negatives, \
    unpack_batch, user_day_examples
from test_beam_fixtures import contract

D1, D2, D3 = "2026-11-01", "2026-11-02", "2026-11-03"
S1, S2, S3 = day_start(D1), day_start(D2), day_start(D3)
T = 4   # tag slots of the small config (3 tags + price token)


def spec(**kw):
    base = dict(start=D3, end=D3, sequence_length=5, lookback_days=1, tag_slots=T, query_terms=4,
                shards=2)
    return SampleSpec(**{**base, **kw})


def beh(ts, item, type_=1, scene=1):
    """An enriched behaviour with a made-up item (shop = 's' + item)."""
    return (ts, type_, scene, item, "s" + item, "b", "c", tuple(item_tag_slots([], None, T)))


def decode(record: bytes) -> dict:
    """A serialized example as {feature: list of values} (strings decoded)."""
    example = example_pb2.Example.FromString(record)
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value)
        out[name] = [v.decode() for v in values] if kind == "bytes_list" else values
    return out


# ---- the item join -------------------------------------------------------------------------------

def test_join_uses_the_days_last_item_row_and_counts_missing_items():
    items = [(D1, ("a.jsonl", 1), ("i1", "old-shop", "b1", "c1", ("x",), 1.0)),
             (D1, ("a.jsonl", 2), ("i1", "new-shop", "b1", "c1", ("y",), 3.0)),
             (D2, ("a.jsonl", 1), ("i1", "d2-shop", "b1", "c1", (), None))]
    behaviors = [(D1, ("u1", "i1", S1 + 5, 1, 2)), (D2, ("u1", "i1", S2 + 5, 4, 1)),
                 (D1, ("u2", "i9", S1 + 7, 1, 1))]
    impressions = [(D1, ("r1", "u1", S1 + 9, "red big shoes for you", "i1", 0, (0.5,), 1, 0))]
    new_item = ("i1", "new-shop", "b1", "c1", ("y", "", "", "price:2"))
    d2_item = ("i1", "d2-shop", "b1", "c1", ("", "", "", ""))
    missing_item = ("i9", "", "", "", ("", "", "", ""))
    with beam.Pipeline() as p:
        joined = ((p | "I" >> beam.Create(items), p | "B" >> beam.Create(behaviors),
                   p | "M" >> beam.Create(impressions)) | JoinItems(tag_slots=T, query_terms=4))
        assert_that(joined[BEHAVIORS], equal_to([
            (("u1", D1), (S1 + 5, 1, 2) + new_item),
            (("u1", D2), (S2 + 5, 4, 1) + d2_item),
            (("u2", D1), (S1 + 7, 1, 1) + missing_item)]), label="behaviors")
        assert_that(joined[IMPRESSIONS], equal_to([
            (("u1", D1), (S1 + 9, "imp", "r1", new_item, ("red", "big", "shoes", "for"), (0.5,), 1, 0))]),
            label="impressions")
        assert_that(joined[MISSING], equal_to([(D1, {"missing_items": 1})]), label="missing")


def test_item_features_pad_tags_and_add_the_price_token():
    assert item_features("i", ("i", "s", "b", "c", ("a", "b", "c", "d"), 7.0), T) == (
        "i", "s", "b", "c", ("a", "b", "c", "price:3"))
    assert item_features("i", None, T) == ("i", "", "", "", ("", "", "", ""))


# ---- day tails -----------------------------------------------------------------------------------

def test_last_n_keeps_the_latest_behaviours_oldest_first():
    rows = [(("u1", D1), beh(S1 + t, f"i{t}")) for t in (5, 1, 9, 3, 7)]
    with beam.Pipeline() as p:
        tails = p | beam.Create(rows) | beam.CombinePerKey(LastN(3))
        assert_that(tails, equal_to([(("u1", D1), [beh(S1 + t, f"i{t}") for t in (5, 7, 9)])]))


# ---- samples -------------------------------------------------------------------------------------

def examples_of(*args, **kw):
    """user_day_examples with each example's parts merged: (task, key, length, dict)."""
    return [(task, key, length, {k: v for part in parts for k, v in part.items()})
            for task, key, length, parts in user_day_examples(*args, **kw)]


def test_a_behaviour_at_or_after_the_sample_time_is_not_in_its_sequence():
    ts = S3 + 1000
    behaviors = [beh(ts - 1, "before"), beh(ts, "same-second"), beh(ts + 1, "after")]
    sample = (ts, "shop", "s1", 1)
    (example,) = examples_of("u1", D3, behaviors, [], [sample], None, spec())
    task, _, length, values = example
    assert (task, length) == ("shop", 1)
    assert list(values["seq_item_id"]) == ["before"]
    assert list(values["seq_time_bucket"]) == [1]         # one second before: < 1 minute


def test_the_sequence_is_the_last_n_before_the_sample_with_yesterdays_tail_first():
    tail = (D2, [beh(S2 + k, f"d2-{k}") for k in range(3)])
    today = [beh(S3 + k, f"d3-{k}") for k in range(4)]
    sample = (S3 + 3, "shop", "s1", 0)                        # sees d3-0, d3-1, d3-2
    (example,) = examples_of("u1", D3, today, [tail], [sample], None, spec(sequence_length=5))
    values = example[3]
    assert list(values["seq_item_id"]) == ["d2-1", "d2-2", "d3-0", "d3-1", "d3-2"]
    gaps = [S3 + 3 - t for t in (S2 + 1, S2 + 2, S3, S3 + 1, S3 + 2)]
    assert list(values["seq_time_bucket"]) == list(time_bucket(gaps))


def test_power_is_one_sample_at_the_end_of_the_day_seeing_the_whole_day():
    today = [beh(S3 + 10, "a"), beh(S3 + 86_399, "last-second")]
    (example,) = examples_of("u1", D3, today, [], [], (25, 2, 6), spec())
    task, _, _, values = example
    assert task == "power"
    assert values["label"] == 5.0 and values["ts"] == S3 + 86_400
    assert list(values["seq_item_id"]) == ["a", "last-second"]
    assert (values["age_bucket"], values["gender"]) == (3, 2)


def test_an_impression_gives_ctr_and_l2r_with_the_configured_weights():
    item = ("i1", "s", "b", "c", ("", "", "", ""))
    samples = [(S3 + 5, "imp", "r1", item, ("q",), (0.1,), 0, 1),     # bought, not clicked
               (S3 + 5, "imp", "r1", item, ("q",), (0.1,), 1, 0),     # clicked
               (S3 + 5, "imp", "r1", item, ("q",), (0.1,), 0, 0),     # nothing
               (S3 + 5, "imp", "r1", item, ("q",), (0.1,), 1, 1)]     # clicked and bought
    out = [(task, values["label"], values["weight"], values.get("label_buy"))
           for task, _, _, values in examples_of(
               "u1", D3, [], [], samples, None, spec(l2r_weight_buy=5.0, l2r_weight_click=2.0,
                                                     l2r_weight_none=0.5))]
    # ctr examples carry the impression's buy (label_buy); the other tasks do not write it
    assert sorted(out, key=str) == sorted([
        ("ctr", 0.0, 1.0, 1.0), ("l2r", 1.0, 5.0, None), ("ctr", 1.0, 1.0, 0.0),
        ("l2r", 1.0, 2.0, None), ("ctr", 0.0, 1.0, 0.0), ("l2r", 0.0, 0.5, None),
        ("ctr", 1.0, 1.0, 1.0), ("l2r", 1.0, 5.0, None)], key=str)


def test_behaviour_ctr_samples_have_seeded_negatives_never_the_positive_item():
    pool = [(f"p{k}", "", "", "", ("", "", "", "")) for k in range(5)]
    positive = beh(S3 + 50, "p2")
    out = examples_of("u1", D3, [beh(S3 + 10, "x"), positive], [], [], None,
                      spec(ctr_from_behaviors=True, ctr_negatives=3), pool)
    assert out == examples_of("u1", D3, [beh(S3 + 10, "x"), positive], [], [], None,
                              spec(ctr_from_behaviors=True, ctr_negatives=3), pool)
    of_positive = [v for task, _, _, v in out if v["ts"] == S3 + 50]
    assert [v["label"] for v in of_positive] == [1.0, 0.0, 0.0, 0.0]
    assert of_positive[0]["item_id"] == "p2"
    assert all(v["item_id"] != "p2" for v in of_positive[1:])
    assert all(list(v["seq_item_id"]) == ["x"] for v in of_positive)        # strictly before
    assert len({v["request_id"] for v in of_positive}) == 1
    assert [v["label_buy"] for v in of_positive] == [0.0] * 4                # a click, no buy
    other_seed = draw_negatives(pool, "u1", S3 + 50, "p2", 3, seed=2)
    assert other_seed != draw_negatives(pool, "u1", S3 + 50, "p2", 3, seed=1)


def test_a_behaviour_made_ctr_positive_is_bought_when_its_behaviour_is_a_buy():
    pool = [(f"p{k}", "", "", "", ("", "", "", "")) for k in range(5)]
    behaviors = [beh(S3 + 10, "p1", type_=BEHAVIOR_INDEX["cart"]),
                 beh(S3 + 20, "p2", type_=BEHAVIOR_INDEX["buy"])]
    out = examples_of("u1", D3, behaviors, [], [], None,
                      spec(ctr_from_behaviors=True, ctr_negatives=2), pool)
    assert [(v["item_id"] if v["label"] else "-", v["label_buy"]) for _, _, _, v in out] == [
        ("p1", 0.0), ("-", 0.0), ("-", 0.0), ("p2", 1.0), ("-", 0.0), ("-", 0.0)]


def test_build_samples_in_memory_pipeline():
    """Through the transform: tails from the lookback window only, leakage-free, sharded, counted."""
    s = spec(start=D3, end=D3, lookback_days=1, sequence_length=5, shards=2)
    item = ("t1", "s9", "b9", "c9", ("", "", "", ""))
    behaviors = [
        (("u1", D1), beh(S1 + 1, "too-old")),          # two days back: beyond lookback 1
        (("u1", D2), beh(S2 + 1, "yesterday")),
        (("u1", D3), beh(S3 + 100, "today")),
        (("u1", D3), beh(S3 + 200, "at-sample")),
        (("u1", D3), beh(S3 + 300, "after")),
    ]
    impressions = [(("u1", D3), (S3 + 200, "imp", "r7", item, ("q",), (0.5,) * 8, 1, 1))]   # bought
    follows = [(D3, ("u1", "talent", S3 + 150, "icon", ("a",), 0))]
    # the day's last users row wins: age 40 (bucket 6), power 2 (label 1)
    users = [(D3, ("u.csv", 2), ("u1", 40, 1, 2)), (D3, ("u.csv", 1), ("u1", 20, 2, 5))]
    with beam.Pipeline() as p:
        inputs = {
            "behaviors": p | "B" >> beam.Create(behaviors),
            "impressions": p | "I" >> beam.Create(impressions),
            "follows": p | "F" >> beam.Create(follows),
            "shop_prefs": p | "S" >> beam.Create([]),
            "users": p | "U" >> beam.Create(users),
        }
        built = inputs | BuildSamples(s, contract())
        decoded = built[EXAMPLES] | beam.FlatMapTuple(
            lambda key, batch: [(key[0], key[2], decode(record)) for _, record in unpack_batch(batch)])
        summary = decoded | beam.MapTuple(lambda task, shard, ex: (
            task, ex["task"][0], ex["label"][0], ex.get("label_buy"), tuple(ex["seq_item_id"]),
            ex["age_bucket"][0], shard in (0, 1)))
        assert_that(summary, equal_to([
            ("ctr", TASK_INDEX["ctr"], 1.0, [1.0], ("yesterday", "today"), 6, True),
            ("l2r", TASK_INDEX["l2r"], 1.0, None, ("yesterday", "today"), 6, True),
            ("talent", TASK_INDEX["talent"], 0.0, None, ("yesterday", "today"), 6, True),
            ("power", TASK_INDEX["power"], 1.0, None, ("yesterday", "today", "at-sample", "after"), 6,
             True),
        ]), label="examples")
        stats = built[STATS] | beam.MapTuple(lambda day, st: (day, sorted(
            (task, v["samples"], v.get("buys")) for task, v in st["tasks"].items())))
        assert_that(stats, equal_to([(D3, [("ctr", 1, 1), ("l2r", 1, None), ("power", 1, None),
                                           ("talent", 1, None)])]), label="stats")


def test_a_request_shares_its_parts_and_their_split_encoding_parses_as_the_whole():
    import tensorflow as tf
    from features.tfrecord import encode_example, parse_batch
    item = ("i1", "s", "b", "c", ("red", "", "", "price:2"))
    samples = [(S3 + 50, "imp", "r1", item, ("q",), (0.25,) * 8, 1, 0),
               (S3 + 50, "imp", "r1", item[:1] + ("s2",) + item[2:], ("q",), (0.5,) * 8, 0, 0),
               (S3 + 90, "shop", "s1", 1)]
    out = list(user_day_examples("u1", D3, [beh(S3 + 10, "x"), beh(S3 + 60, "y")], [], samples,
                                 (30, 1, 4), spec()))
    contexts = [parts[0] for _, _, _, parts in out]
    targets = [parts[1] for _, _, _, parts in out]
    assert len(out) == 6 and all(c is contexts[0] for c in contexts[:4]) and contexts[4] is not contexts[0]
    assert targets[0] is targets[1] and targets[2] is targets[3] and targets[1] is not targets[2]
    c = contract()
    split = [b"".join(encode_example(part, c) for part in parts) for _, _, _, parts in out]
    whole = [encode_example({k: v for part in parts for k, v in part.items()}, c)
             for _, _, _, parts in out]
    got, want = parse_batch(tf.constant(split), c), parse_batch(tf.constant(whole), c)
    for name in c.features:
        assert (got[name].numpy() == want[name].numpy()).all(), name


@pytest.mark.parametrize("n, expected", [(0, "0"), (1, "1-2"), (2, "1-2"), (3, "3-4"), (20, "19-20")])
def test_sequence_length_bins(n, expected):
    from pipeline.beam.samples import sequence_length_bin
    assert sequence_length_bin(n, 20) == expected
