"""dataio/contracts.py names the on-disk layout earlier runs already have: these names must not drift."""

from __future__ import annotations

from typing import get_args, get_type_hints

import numpy as np

from actors.prepare import sequences_table
from dataio.contracts import (
    MANIFEST,
    MARKER,
    RUN_CONFIG,
    STAGE_NAMES,
    SUBSET_NAMES,
    EvaluateOutputs,
    FixedSubsetName,
    PrepareOutputs,
    SelectOutputs,
    TrainOutputs,
    shard_name,
)
from jobs.config import DEDUP_SUBSETS, SelectConfig
from jobs.stages import STAGES
from training.subsets import FIXED_SUBSETS, SUBSET_MODES


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
    assert (EvaluateOutputs.METRICS, EvaluateOutputs.DOWNSTREAM_ROWS, EvaluateOutputs.DOWNSTREAM_TABLE) == (
        "metrics.json",
        "downstream.jsonl",
        "downstream.md",
    )
    assert shard_name(7) == "part-00007.parquet"


def test_prepare_writes_the_declared_schema():
    rows = [("doc", 0, np.array([5, 6, 7])), ("doc", 1, np.array([8, 9]))]
    table = sequences_table(rows)
    assert table.schema == PrepareOutputs.SEQUENCE_SCHEMA
    assert table.column("num_tokens").to_pylist() == [3, 2]
    assert sequences_table([]).schema == PrepareOutputs.SEQUENCE_SCHEMA


def test_the_subset_names_agree_everywhere():
    """One Literal names the subsets; the config's choices, the trainer's modes and the schemas follow it."""
    hints = get_type_hints(SelectConfig)
    assert SUBSET_NAMES == ("ingenious", "greedi", "semdedup", "d4", "perplexity", "dsir", "classifier")
    assert tuple(SelectOutputs.SUBSET_SCHEMAS) == SUBSET_NAMES
    assert get_args(hints["strategy"]) == SUBSET_NAMES
    assert get_args(get_args(hints["also"])[0]) == FIXED_SUBSETS == get_args(FixedSubsetName)
    assert FIXED_SUBSETS == tuple(n for n in SUBSET_NAMES if n != "ingenious")  # all but the drawn one
    assert set(DEDUP_SUBSETS) < set(FIXED_SUBSETS)
    assert SUBSET_MODES == (
        "full",
        "ingenious",
        "greedi",
        "random",
        "semdedup",
        "d4",
        "perplexity",
        "dsir",
        "classifier",
        "file",
    )


def test_the_stage_names_are_the_pipelines_stages():
    assert [s.name for s in STAGES] == STAGE_NAMES == ["prepare", "warmstart", "embed", "select", "train", "evaluate"]


def test_every_subset_name_has_a_strategy_and_every_strategy_a_name():
    from jobs.stages.strategies import DIVERSITY, STRATEGIES

    assert set(STRATEGIES) == set(SUBSET_NAMES) and set(DIVERSITY) <= set(STRATEGIES)
