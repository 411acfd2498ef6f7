"""The paper's comparison at small scale: arms x seeds trained from one warm start, then scored.

    python -m jobs.experiment [--config configs/experiment-bert.yaml ...] [--out runs]

An experiment config holds a whole pipeline config (`pipeline:`), the `seeds`, the `arms` (train
settings laid over `pipeline.train`, e.g. `{subset: random, redraw_every: null}`; `steps_factor: 4`
trains that many times longer and saves the model at every multiple of the base steps) and the
`ablations` (pipeline and train overrides, one seed each). Every variant shares what its settings
share: the warm start is trained once, and an ablation that changes only `select` reuses the
embeddings. Each arm is one Ray task (one CPU), all submitted at once; each model is scored by
held-out LM loss on every evaluation set and by `evaluate.downstream` fine-tuning. A finished arm, score or
stage is never redone, so the
command resumes after an interruption. reporting/experiment_report.py writes results.md and the plots.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import ray
import yaml

from actors.evaluator import evaluate_checkpoint
from actors.trainer import launch_args, train_in_task
from dataio.redact import redact, redact_tree
from dataio.rundir import RunDir
from experiments.layout import (
    MAIN,
    SELECTION_STAGES,
    WARMSTART,
    Experiment,
    Run,
    pipeline_dir,
    run_dir,
    warmstart_dir,
)
from jobs.config import PipelineConfig, build_section, check_name, read_yaml, resolve_paths
from jobs.downstream import submit_downstream
from jobs.pipeline import connect_ray, run_pipeline, stage_hashes
from jobs.stages import Context
from jobs.stages.evaluate import evaluation_sets
from reporting.experiment_report import write_report
from training.loop import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIGS = [CONFIG_DIR / "experiment-bert.yaml", CONFIG_DIR / "experiment-gpt2.yaml"]


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _mapping(data: Any, where: str) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    return data


def _check_keys(data: Any, allowed: tuple[str, ...], where: str) -> dict:
    unknown = [k for k in _mapping(data, where) if k not in allowed]
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (expected one of {', '.join(allowed)})")
    return data


def _train_config(base: TrainConfig, overrides: dict, where: str, source: Path) -> TrainConfig:
    return build_section(TrainConfig, _merge(dataclasses.asdict(base), overrides), where, str(source))


def load_experiment(path: str | Path, *, base: Path | None = None) -> Experiment:
    """Read and validate an experiment config; every arm's and ablation's settings are checked here,
    before anything runs, with errors that name the file and the key."""
    path, base = Path(path), base or Path.cwd()
    if not path.exists():
        raise ValueError(f"experiment config {path} does not exist")
    raw = _check_keys(
        read_yaml(path) or {},
        ("name", "pipeline", "seeds", "arms", "ablations", "ablation_seed", "compare_to"),
        str(path),
    )
    for key in ("name", "pipeline", "seeds", "arms"):
        if key not in raw:
            raise ValueError(f"{path}: '{key}' is required")
    seeds = raw["seeds"]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ValueError(f"{path}: 'seeds' must be a non-empty list of distinct integers, got {seeds!r}")
    if min(seeds) < 0:
        raise ValueError(f"{path}: 'seeds' must be >= 0 (NumPy seeds are unsigned), got {seeds!r}")
    try:
        check_name(raw["name"], "'name'")
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None

    def pipeline(overrides: dict, where: str) -> PipelineConfig:
        cfg = resolve_paths(build_section(PipelineConfig, _merge(raw["pipeline"], overrides), where, str(path)), base)
        # Every variant computes its GreeDi subset: the greedi arm trains on it, and the report
        # measures each variant's coverage against its greedy top-k.
        return dataclasses.replace(cfg, select=dataclasses.replace(cfg.select, greedi_merge=True))

    main = pipeline({}, "pipeline")
    pipelines, runs, notes = {MAIN: main}, [], {}
    arms, ablations = _mapping(raw["arms"], f"{path}: arms"), _mapping(raw.get("ablations") or {}, f"{path}: ablations")
    for name in [*arms, *ablations]:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(name)) or name == WARMSTART:
            raise ValueError(
                f"{path}: {name!r} cannot name an arm or ablation (letters, digits, _ . - only; not {WARMSTART!r})"
            )
    if set(arms) & set(ablations):
        raise ValueError(f"{path}: {sorted(set(arms) & set(ablations))[0]!r} names both an arm and an ablation")
    for arm, spec in arms.items():
        spec = dict(_mapping(spec or {}, f"{path}: arms.{arm}"))
        factor = spec.pop("steps_factor", 1)
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"{path}: arms.{arm}.steps_factor must be an integer >= 1, got {factor!r}")
        train = _train_config(main.train, spec, f"arms.{arm}", path)
        train = dataclasses.replace(train, steps=train.steps * factor)
        snapshots = tuple(main.train.steps * i for i in range(1, factor))
        runs += [
            Run(
                variant=MAIN, arm=arm, seed=s, train=dataclasses.replace(train, seed=s), snapshots=snapshots, group=MAIN
            )
            for s in seeds
        ]
    ablation_seed = raw.get("ablation_seed", seeds[0])
    if not isinstance(ablation_seed, int) or ablation_seed < 0:
        raise ValueError(f"{path}: 'ablation_seed' must be an integer >= 0, got {ablation_seed!r}")
    for name, spec in ablations.items():
        spec = _check_keys(spec or {}, ("pipeline", "train", "note"), f"{path}: ablations.{name}")
        cfg = pipeline(spec.get("pipeline") or {}, f"ablations.{name}.pipeline")
        train = _train_config(main.train, spec.get("train") or {}, f"ablations.{name}.train", path)
        variant = name if spec.get("pipeline") else MAIN
        if variant != MAIN:
            pipelines[variant] = cfg
        runs.append(
            Run(
                variant=variant,
                arm=name,
                seed=ablation_seed,
                train=dataclasses.replace(train, seed=ablation_seed),
                group="ablation",
            )
        )
        notes[name] = spec.get("note") or json.dumps({k: spec[k] for k in ("pipeline", "train") if k in spec})
    compare_to = raw.get("compare_to") or [next(iter(arms))]
    if not isinstance(compare_to, list) or any(a not in arms for a in compare_to):
        raise ValueError(f"{path}: 'compare_to' must list arms (of {', '.join(arms)}), got {compare_to!r}")
    return Experiment(name=str(raw["name"]), pipelines=pipelines, runs=runs, notes=notes, compare_to=compare_to)


def share_stages(root: Path, variant: Path, base_cfg: PipelineConfig, cfg: PipelineConfig) -> None:
    """Link the base pipeline's finished stages whose hash this variant shares (same settings and
    inputs), so an ablation trains from the same warm start and recomputes only what it changes."""
    base_run, mine, theirs = RunDir(root), stage_hashes(cfg), stage_hashes(base_cfg)
    variant.mkdir(parents=True, exist_ok=True)
    for stage in SELECTION_STAGES:
        link = variant / stage
        if mine[stage] == theirs[stage] and base_run.is_done(stage, theirs[stage]) and not link.exists():
            link.symlink_to((root / stage).resolve(), target_is_directory=True)


def _pending_scores(
    folder: Path, models: dict[str, Path], cfg: PipelineConfig, sets: dict[str, list]
) -> dict[str, Any]:
    """Launch what is missing of a run's scores: held-out loss of each model (the final one and any
    snapshots) on each set, and fine-tuning of the final model. Results land in `folder`."""
    refs: dict[str, Any] = {}
    gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0  # a task uses a GPU only if it reserved one
    if not (folder / "eval.json").exists():
        refs["eval"] = {
            f"{m}/{name}": evaluate_checkpoint.options(num_gpus=gpus).remote(
                str(d), seqs, model_cfg=cfg.model, batch_size=cfg.evaluate.batch_size, seed=cfg.evaluate.seed
            )
            for m, d in models.items()
            for name, seqs in sets.items()
            if seqs
        }
    if cfg.evaluate.downstream.tasks and not (folder / "downstream.json").exists():
        refs["downstream"] = submit_downstream(
            {folder.name: str(models["final"])}, cfg.evaluate.downstream, kind=cfg.model.kind, gpus_per_task=gpus
        )[1]
    return refs


def _write_scores(folder: Path, refs: dict[str, Any]) -> None:
    if "eval" in refs:
        RunDir.write_json(folder / "eval.json", dict(zip(refs["eval"], ray.get(list(refs["eval"].values())))))
    if "downstream" in refs:
        RunDir.write_json(folder / "downstream.json", {"rows": ray.get(refs["downstream"])})


def _flush_ready(scoring: dict[Path, dict], *, wait: bool = False) -> None:
    """Write the scores of every run whose score tasks have all finished (all of them if `wait`)."""
    for folder, refs in list(scoring.items()):
        flat = list(refs.get("eval", {}).values()) + list(refs.get("downstream", []))
        if wait or len(ray.wait(flat, num_returns=len(flat), timeout=0)[0]) == len(flat):
            _write_scores(folder, refs)
            del scoring[folder]


def run_experiment(exp: Experiment, out: Path) -> Path:
    """Train and score every run (skipping finished ones); returns the experiment folder."""
    root = out / exp.name
    pipes = {v: pipeline_dir(root, v) for v in exp.pipelines}
    connect_ray(exp.pipelines[MAIN])
    for variant, cfg in exp.pipelines.items():  # the main pipeline first: the others link its stages
        if variant != MAIN:
            share_stages(pipes[MAIN], pipes[variant], exp.pipelines[MAIN], cfg)
        run_pipeline(cfg, pipes[variant], only=list(SELECTION_STAGES))
    sets = evaluation_sets(Context(exp.pipelines[MAIN], RunDir(pipes[MAIN])))
    warm = warmstart_dir(root)  # the common starting point, scored like an arm
    warm.mkdir(parents=True, exist_ok=True)
    scoring = {warm: _pending_scores(warm, {"final": pipes[MAIN] / "warmstart" / "model"}, exp.pipelines[MAIN], sets)}

    def score(run: Run, folder: Path) -> None:
        models = {"final": folder / "model"} | {f"step{s}": folder / f"model-step{s}" for s in run.snapshots}
        scoring[folder] = _pending_scores(folder, models, exp.pipelines[run.variant], sets)

    # Every run is submitted at once, main arms seed by seed and then the ablations, the longest first
    # within a seed, so no CPU waits behind a barrier; each run is scored as soon as it is trained.
    order = sorted(exp.runs, key=lambda r: (r.group != MAIN, r.seed if r.group == MAIN else 0, -r.train.steps))
    training: dict[ray.ObjectRef, tuple[Run, Path]] = {}
    for run in order:
        folder, pipe = run_dir(root, run), exp.pipelines[run.variant]
        if (folder / "train.json").exists():
            score(run, folder)
            continue
        args = launch_args(
            train=run.train,
            model=pipe.model,
            data=pipes[run.variant] / "prepare",
            out_dir=folder,
            select_dir=pipes[run.variant] / "select",
            fraction=pipe.select.fraction,
            init_from=str(pipes[run.variant] / "warmstart" / "model"),
        )
        gpus = 1 if Context(pipe, RunDir(pipes[run.variant])).use_gpu(run.train.use_gpu) else 0
        task = train_in_task.options(num_cpus=run.train.cpus_per_worker, num_gpus=gpus)
        training[task.remote(args, snapshots=run.snapshots)] = (run, folder)
    while training:
        [done], _ = ray.wait(list(training), num_returns=1)
        run, folder = training.pop(done)
        RunDir.write_json(
            folder / "train.json",
            {
                **ray.get(done),
                "variant": run.variant,
                "arm": run.arm,
                "seed": run.seed,
                "train": dataclasses.asdict(run.train),
            },
        )
        print(
            f"[ingenious] experiment {exp.name}: trained {run.variant}/{run.key} ({len(training)} runs left)",
            flush=True,
        )
        score(run, folder)
        _flush_ready(scoring)
    _flush_ready(scoring, wait=True)
    write_report(root, exp)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.experiment", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        metavar="PATH",
        help="experiment YAML (repeatable; default: configs/experiment-bert.yaml and experiment-gpt2.yaml)",
    )
    parser.add_argument("--out", default="runs", help="parent folder of the experiment folders (default: ./runs)")
    args = parser.parse_args(argv)
    base = Path(os.environ.get("INGENIOUS_BASE_DIR") or Path.cwd())
    if "://" in args.out:  # variants share finished stages by symbolic links, which object stores lack
        raise SystemExit(
            f"--out {redact(args.out)}: an experiment's folder must be a local path (on a cluster, one "
            "every node mounts); object storage is not supported for experiments"
        )
    try:
        experiments = [load_experiment(p, base=base) for p in (args.config or DEFAULT_CONFIGS)]
    except ValueError as e:
        raise SystemExit(f"config error: {redact(str(e))}") from None
    for exp in experiments:
        print(
            f"[ingenious] experiment {exp.name}: {len(exp.runs)} runs, variants {', '.join(exp.pipelines)}\n"
            f"{yaml.safe_dump(redact_tree(exp.pipelines[MAIN].to_dict()), sort_keys=False)}",
            flush=True,
        )
        root = run_experiment(exp, base / args.out)
        print((root / "results.md").read_text(), flush=True)
        print(f"results: {root / 'results.md'}", flush=True)


if __name__ == "__main__":
    main()
