"""dataio/contracts.py names the on-disk layout earlier runs already have: these names must not drift."""

from __future__ import annotations

import numpy as np

from actors.prepare import sequences_table
from dataio.contracts import MANIFEST, MARKER, RUN_CONFIG, PrepareOutputs, SelectOutputs, TrainOutputs, shard_name


def test_the_names_are_the_ones_on_disk():
    assert (MARKER, MANIFEST, RUN_CONFIG) == ("_SUCCESS", "manifest.json", "config.yaml")
    assert (PrepareOutputs.SEQUENCES, PrepareOutputs.HELDOUT, PrepareOutputs.TOKENIZER) == (
        "sequences",
        "heldout",
        "tokenizer",
    )
    assert (TrainOutputs.MODEL, TrainOutputs.METRICS) == ("model", "metrics.jsonl")
    assert (SelectOutputs.PROBABILITIES, SelectOutputs.SUBSET) == ("probabilities.parquet", "subset.parquet")
    assert SelectOutputs.subset("greedi") == "subset_greedi.parquet"
    assert shard_name(7) == "part-00007.parquet"


def test_prepare_writes_the_declared_schema():
    rows = [("doc", 0, np.array([5, 6, 7])), ("doc", 1, np.array([8, 9]))]
    table = sequences_table(rows)
    assert table.schema == PrepareOutputs.SEQUENCE_SCHEMA
    assert table.column("num_tokens").to_pylist() == [3, 2]
    assert sequences_table([]).schema == PrepareOutputs.SEQUENCE_SCHEMA
