"""What each stage leaves in its folder, named once: the stage writes these names and every reader
(the next stages, the trainer, refresh, reports, benchmarks) opens them by these names.

Folders of shards hold `part-NNNNN.parquet` files. The schemas are the columns and types a stage
writes; its writers build their tables with them, so a stage cannot drift from what is declared.
The embed stage's shards sit at the top of its folder, one per prepare shard, and hold sequence_id
int64, embedding fixed_size_list<float32>[d] and, with embed.sequence_loss, loss float32
(dataio/rundir.embedding_table).
"""

from __future__ import annotations

from typing import Literal, get_args

import pyarrow as pa

# The pipeline's stages in run order, each writing the folder of its name in the run directory.
STAGE_NAMES = ["prepare", "warmstart", "embed", "select", "train", "evaluate"]

# The subsets the select stage can write, each name spelled here only; every other list of them (the
# config's choices, the trainer's modes, the report's arms) is built from these. The greedy facility-
# location selections come first: ingenious is a distribution (PROBABILITIES) drawn from while training,
# greedi one list. Then the prunings: SemDeDup-based deduplication within the k-means clusters, and a
# band of the sequences' losses. Then the target-aware ones, toward a target sample (select.target): DSIR's
# importance resampling and a quality classifier's top or band. Every subset but ingenious is one list of
# ids for the whole run.
SelectedSubsetName = Literal["ingenious", "greedi"]
DedupSubsetName = Literal["semdedup", "d4"]
PrunedSubsetName = Literal[DedupSubsetName, "perplexity"]
TargetSubsetName = Literal["dsir", "classifier"]
SubsetName = Literal[SelectedSubsetName, PrunedSubsetName, TargetSubsetName]
FixedSubsetName = Literal["greedi", PrunedSubsetName, TargetSubsetName]
SUBSET_NAMES: tuple[str, ...] = get_args(SubsetName)

MARKER = "_SUCCESS"  # written last in a finished stage's folder (dataio/rundir.py)
MANIFEST = "manifest.json"  # a stage's config hash, inputs, outputs' digests and summary
RUN_CONFIG = "config.yaml"  # the run's config, at the top of the run directory


def shard_name(index: int) -> str:
    """The file of shard `index` in a folder of shards."""
    return f"part-{index:05d}.parquet"


class PrepareOutputs:
    SEQUENCES = "sequences"  # shards of training sequences (SEQUENCE_SCHEMA)
    HELDOUT = "heldout"  # shards of held-out sequences, same schema
    TOKENIZER = "tokenizer"  # the run's tokenizer (save_pretrained)
    SEQUENCE_SCHEMA = pa.schema(
        [
            ("sequence_id", pa.int64()),
            ("doc_id", pa.string()),
            ("chunk", pa.int32()),
            ("input_ids", pa.list_(pa.int32())),
            ("num_tokens", pa.int32()),
        ]
    )


class TrainOutputs:
    """The warmstart and train stages (and an experiment's runs) alike."""

    MODEL = "model"  # the final model (save_pretrained)
    METRICS = "metrics.jsonl"  # one line per step


class SelectOutputs:
    PROBABILITIES = "probabilities.parquet"
    SUBSET = "subset.parquet"  # a copy of the configured strategy's subset, the one train uses
    # With select.prefilter: every sequence, whether it survived the filters, and the first that dropped it.
    PREFILTER = "prefilter.parquet"
    PREFILTER_SCHEMA = pa.schema([("sequence_id", pa.int64()), ("kept", pa.bool_()), ("dropped_by", pa.string())])
    PROBABILITIES_SCHEMA = pa.schema(
        [
            ("sequence_id", pa.int64()),
            ("shard", pa.int32()),
            ("rank", pa.int64()),
            ("gain", pa.float64()),
            ("probability", pa.float64()),
        ]
    )
    # Each subset's columns (in SUBSET_NAMES order); sequence_id first, in the subset's rank order where it has one.
    SUBSET_SCHEMAS = {
        "ingenious": pa.schema([("sequence_id", pa.int64()), ("draw", pa.int32())]),
        "greedi": pa.schema([("sequence_id", pa.int64()), ("rank", pa.int64()), ("gain", pa.float64())]),
        "semdedup": pa.schema(
            [
                ("sequence_id", pa.int64()),
                ("cluster", pa.int32()),
                ("centroid_similarity", pa.float32()),
                ("duplicate_score", pa.float32()),
            ]
        ),
        "d4": pa.schema(
            [
                ("sequence_id", pa.int64()),
                ("rank", pa.int64()),
                ("cluster", pa.int32()),
                ("centroid_similarity", pa.float32()),
            ]
        ),
        "perplexity": pa.schema([("sequence_id", pa.int64()), ("loss", pa.float32())]),
        "dsir": pa.schema([("sequence_id", pa.int64()), ("rank", pa.int64()), ("log_weight", pa.float64())]),
        "classifier": pa.schema([("sequence_id", pa.int64()), ("rank", pa.int64()), ("score", pa.float64())]),
    }

    @staticmethod
    def subset(name: str) -> str:
        """The file of one strategy's subset: subset_<name>.parquet."""
        return f"subset_{name}.parquet"


class EvaluateOutputs:
    METRICS = "metrics.json"  # "<model>/<set>" -> loss, perplexity, tokens, sequences
    DOWNSTREAM_ROWS = "downstream.jsonl"  # one fine-tuning run (model, task, seed) a line
    DOWNSTREAM_TABLE = "downstream.md"  # each task's mean and interval over seeds


class ExportOutputs:
    """`ingenious export`: a run's selected data for other trainers, one folder per draw of the subset
    schedule, each holding one file per prepare shard that has any of the draw's sequences."""

    FOLDER = "export"  # in the run directory, one subfolder per format, unless --out names another place
    FORMATS = ("parquet", "jsonl")
    SCHEMA = pa.schema(
        [
            ("sequence_id", pa.int64()),
            ("doc_id", pa.string()),
            ("chunk", pa.int32()),
            ("draw", pa.int32()),
            ("text", pa.string()),
            ("input_ids", pa.list_(pa.int32())),
        ]
    )

    @staticmethod
    def draw(index: int) -> str:
        return f"draw-{index:05d}"

    @staticmethod
    def shard(index: int, fmt: str) -> str:
        """The file of prepare shard `index` in a draw's folder: part-NNNNN.parquet or .jsonl."""
        return shard_name(index).removesuffix(".parquet") + f".{fmt}"
