"""Splitting a stream of (tag, value) tuples into one PCollection per tag, on every Beam runner."""
from __future__ import annotations

import apache_beam as beam


def _of_tag(element, tag):
    return [element[1]] if element[0] == tag else []


class SplitByTag(beam.PTransform):
    """(tag, value) -> {tag: PCollection of values}, for every tag in `tags`.

    One single-output step per tag rather than beam.Partition or a multi-output DoFn: Beam's
    DaskRunner (2.77) ignores output tags, so every output of those would get every element
    (docs/BEAM.md, "On a Dask cluster").
    """

    def __init__(self, tags):
        super().__init__()
        self.tags = tuple(tags)

    def expand(self, tagged):
        return {tag: tagged | f"Untag{tag.title()}" >> beam.FlatMap(_of_tag, tag) for tag in self.tags}
