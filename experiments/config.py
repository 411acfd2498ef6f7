"""An experiment config, read and checked before anything runs.

An experiment config holds a whole pipeline config (`pipeline:`), the `seeds`, the `arms` (train
settings laid over `pipeline.train`, e.g. `{subset: random, redraw_every: null}`, with an arm's own
keys: `steps_factor: 4` trains that many times longer and saves the model at every multiple of the
base steps, `seeds` replaces the experiment's, `oracle: CATEGORY` trains on a draw from one category of
the pool) and the `ablations` (pipeline and train overrides, one seed each). The file is read by the
pipeline config's loader (dataio/configfile.py): an unknown key is an error naming the file and the
key, with the nearest known key as a suggestion. load_experiment turns it into an Experiment
(experiments/layout.py): every variant's pipeline and every run's train settings.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataio.configfile import build_section, check_name, is_plain_name, read_yaml
from experiments.layout import MAIN, WARMSTART, BestOf, Experiment, Gate, Run
from experiments.webpool import CATEGORIES, HELDOUT_FILE
from jobs.config import PipelineConfig, resolve_paths
from training.loop import TrainConfig
from training.subsets import FIXED_SUBSETS


@dataclass(kw_only=True)
class ArmSettings:
    """An arm's own keys; the rest of the arm's mapping is train settings laid over `pipeline.train`."""

    steps_factor: int = 1  # trains this many times the base steps, saving the model at every multiple
    seeds: list[int] | None = None  # None: the experiment's seeds
    oracle: str | None = None  # a pool category: trains on a budget-sized draw from it (needs `pool`)

    def __post_init__(self) -> None:
        if self.steps_factor < 1:
            raise ValueError(f"steps_factor must be an integer >= 1, got {self.steps_factor!r}")
        if self.seeds is not None and not (self.seeds and all(s >= 0 for s in self.seeds)):
            raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {self.seeds!r}")
        if self.oracle is not None and self.oracle not in CATEGORIES:
            raise ValueError(f"oracle must be a pool category (one of {', '.join(CATEGORIES)})")


ARM_KEYS = tuple(f.name for f in dataclasses.fields(ArmSettings))


@dataclass(kw_only=True)
class AblationSettings:
    pipeline: dict[str, Any] | None = None  # laid over `pipeline`: a variant of its own
    train: dict[str, Any] | None = None  # laid over `pipeline.train`
    note: str | None = None  # what it changes, for the report (None: the overrides as JSON)

    def __post_init__(self) -> None:
        for key in ("pipeline", "train"):
            if not isinstance(getattr(self, key) or {}, dict):
                raise ValueError(f"{key} must be a mapping, got {type(getattr(self, key)).__name__}")


@dataclass(kw_only=True)
class ExperimentConfig:
    """The file as written; the arms and ablations are checked one by one in load_experiment."""

    name: str
    pipeline: dict[str, Any]
    seeds: list[int]
    arms: dict[str, Any]  # arm -> its ArmSettings keys and train settings (null: none)
    ablations: dict[str, Any] = field(default_factory=dict)  # name -> its AblationSettings keys (null: none)
    ablation_seed: Any = None  # an integer >= 0 (None: the first seed); its check below names what it must be
    compare_to: list[str] | None = None  # arms every other arm is compared with (None: the first arm)
    pool: str | None = None  # a pool builder config (experiments/webpool.py), from the folder the command ran in
    primary: str = "heldout"  # the evaluation set the gate and steps-to-target are judged on
    gate: Gate | None = None
    eval_every: int | None = None  # held-out loss every this many steps too: curves and steps-to-target
    best_of: BestOf | None = None

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"'seeds' must be a non-empty list of distinct integers, got {self.seeds!r}")
        if min(self.seeds) < 0:
            raise ValueError(f"'seeds' must be >= 0 (NumPy seeds are unsigned), got {self.seeds!r}")
        check_name(self.name, "'name'")
        self._check_mappings()
        for name in [*self.arms, *self.ablations]:
            if not is_plain_name(str(name)) or name == WARMSTART:
                raise ValueError(
                    f"{name!r} cannot name an arm or ablation (letters, digits, _ . - only; not {WARMSTART!r})"
                )
        if set(self.arms) & set(self.ablations):
            raise ValueError(f"{sorted(set(self.arms) & set(self.ablations))[0]!r} names both an arm and an ablation")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"'eval_every' must be an integer >= 1 or absent, got {self.eval_every!r}")
        seed = self.ablation_seed
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"'ablation_seed' must be an integer >= 0, got {seed!r}")
        self._check_arm_references()

    def _check_mappings(self) -> None:
        self.ablations = self.ablations or {}  # `ablations:` left empty
        for key in ("pipeline", "arms", "ablations"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"{key} must be a mapping, got {type(getattr(self, key)).__name__}")
        for key in ("arms", "ablations"):
            specs = getattr(self, key)
            bad = next((name for name, spec in specs.items() if not isinstance(spec or {}, dict)), None)
            if bad is not None:
                raise ValueError(f"{key}.{bad} must be a mapping, got {type(specs[bad]).__name__}")
        if not self.arms:
            raise ValueError("arms must name at least one arm")

    def _check_arm_references(self) -> None:
        """compare_to, the gate and best_of name arms of this experiment."""
        arms = ", ".join(self.arms)
        if self.compare_to and any(a not in self.arms for a in self.compare_to):
            raise ValueError(f"'compare_to' must list arms (of {arms}), got {self.compare_to!r}")
        if self.gate is not None and any(a not in self.arms for a in (self.gate.arm, self.gate.against)):
            raise ValueError(
                f"gate.arm and gate.against must name arms (of {arms}), got {dataclasses.asdict(self.gate)!r}"
            )
        if self.best_of is not None:
            names, extra = self.best_of.arms, self.best_of.seeds
            if not names or any(a not in self.arms for a in names):
                raise ValueError(f"best_of.arms must list arms (of {arms}), got {names!r}")
            if not extra or any(s < 0 for s in extra):
                raise ValueError(f"best_of.seeds must be a non-empty list of integers >= 0, got {extra!r}")


def load_experiment(path: str | Path, *, base: Path | None = None) -> Experiment:
    """Read and validate an experiment config; every arm's and ablation's settings are checked here,
    before anything runs, with errors that name the file and the key. Relative paths in it are taken
    from `base` (default: the current folder)."""
    path, base = Path(path), base or Path.cwd()
    if not path.exists():
        raise ValueError(f"experiment config {path} does not exist")
    cfg = build_section(ExperimentConfig, read_yaml(path) or {}, "", str(path))
    main = _pipeline(cfg, {}, "pipeline", path, base)
    pipelines, runs, notes = {MAIN: main}, [], {}
    for arm, spec in cfg.arms.items():
        runs += _arm_runs(cfg, arm, spec or {}, main, path)
    for name, spec in cfg.ablations.items():
        variant, run, notes[name] = _ablation(cfg, name, spec or {}, main, path, base)
        if variant is not None:
            pipelines[run.variant] = variant
        runs.append(run)
    pool = None
    if cfg.pool is not None:
        pool = (base / cfg.pool).resolve()
        if not pool.is_file():
            raise ValueError(f"{path}: pool config {pool} does not exist")
    sets = ["heldout", *([Path(HELDOUT_FILE).stem] if pool else []), *(Path(e).stem for e in main.evaluate.external)]
    if cfg.primary not in sets:
        raise ValueError(
            f"{path}: 'primary' must name an evaluation set (one of {', '.join(sets)}), got {cfg.primary!r}"
        )
    return Experiment(
        name=cfg.name,
        pipelines=pipelines,
        runs=runs,
        notes=notes,
        compare_to=cfg.compare_to or [next(iter(cfg.arms))],
        pool=pool,
        primary=cfg.primary,
        gate=cfg.gate,
        best_of=cfg.best_of,
    )


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _pipeline(cfg: ExperimentConfig, overrides: dict, where: str, path: Path, base: Path) -> PipelineConfig:
    """The experiment's pipeline with `overrides` laid over it (none: the main pipeline, which also
    computes the fixed subsets the arms train on, once for every arm)."""
    merged = _merge(cfg.pipeline, overrides)
    if not overrides:
        arm_subsets = {(spec or {}).get("subset") for spec in cfg.arms.values()}
        also = [*(merged.get("select") or {}).get("also", [])]
        also += [s for s in FIXED_SUBSETS if s in arm_subsets and s not in also and s != "greedi"]
        merged = _merge(merged, {"select": {"also": also}})
    pipeline = resolve_paths(build_section(PipelineConfig, merged, where, str(path)), base)
    # Every variant computes its GreeDi subset: the greedi arm trains on it, and the report
    # measures each variant's coverage against its greedy top-k.
    return dataclasses.replace(pipeline, select=dataclasses.replace(pipeline.select, greedi_merge=True))


def _train_config(base: TrainConfig, overrides: dict, where: str, path: Path) -> TrainConfig:
    return build_section(TrainConfig, _merge(dataclasses.asdict(base), overrides), where, str(path))


def _arm_runs(cfg: ExperimentConfig, arm: str, spec: dict, main: PipelineConfig, path: Path) -> list[Run]:
    """One run per seed of the arm: its train settings laid over the main pipeline's."""
    spec = dict(spec)
    own = build_section(ArmSettings, {k: spec.pop(k) for k in ARM_KEYS if k in spec}, f"arms.{arm}", str(path))
    if own.oracle is not None:
        if cfg.pool is None:
            raise ValueError(f"{path}: arms.{arm}.oracle needs a 'pool' (its categories name the oracle's data)")
        if "subset" in spec:
            raise ValueError(f"{path}: arms.{arm}: an oracle arm trains on its category; drop 'subset'")
        # The file is written by the runner (oracle_file) once the pool is prepared.
        spec |= {"subset": "file", "subset_file": f"oracle:{own.oracle}"}
    train = _train_config(main.train, spec, f"arms.{arm}", path)
    train = dataclasses.replace(train, steps=train.steps * own.steps_factor)
    snapshots = {main.train.steps * i for i in range(1, own.steps_factor)}
    if cfg.eval_every:  # held-out loss along the way: curves and steps-to-target
        snapshots |= set(range(cfg.eval_every, train.steps, cfg.eval_every))
    return [
        Run(
            variant=MAIN,
            arm=arm,
            seed=s,
            train=dataclasses.replace(train, seed=s),
            snapshots=tuple(sorted(snapshots)),
            group=MAIN,
            oracle=own.oracle,
        )
        for s in own.seeds or cfg.seeds
    ]


def _ablation(
    cfg: ExperimentConfig, name: str, spec: dict, main: PipelineConfig, path: Path, base: Path
) -> tuple[PipelineConfig | None, Run, str]:
    """(its own pipeline variant, or None where it changes only train settings; its run; its note)."""
    own = build_section(AblationSettings, spec, "", f"{path}: ablations.{name}")
    variant = _pipeline(cfg, own.pipeline, f"ablations.{name}.pipeline", path, base) if own.pipeline else None
    train = _train_config(main.train, own.train or {}, f"ablations.{name}.train", path)
    seed = cfg.seeds[0] if cfg.ablation_seed is None else cfg.ablation_seed
    run = Run(
        variant=name if variant else MAIN,
        arm=name,
        seed=seed,
        train=dataclasses.replace(train, seed=seed),
        group="ablation",
    )
    return variant, run, own.note or json.dumps({k: spec[k] for k in ("pipeline", "train") if k in spec})
