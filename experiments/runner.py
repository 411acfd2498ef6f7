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

import numpy as np
import ray
import yaml

from actors.evaluator import evaluate_checkpoint
from actors.trainer import launch_args, train_in_task
from dataio.configfile import build_section, check_name, read_yaml, section_dict
from dataio.contracts import PrepareOutputs, TrainOutputs
from dataio.log import configure, get_logger
from dataio.redact import redact, redact_tree
from dataio.rundir import RunDir, read_sequences
from experiments.categories import oracle_subset, sequence_categories, write_oracle
from experiments.layout import (
    MAIN,
    SELECTION_STAGES,
    WARMSTART,
    BestOf,
    Experiment,
    Gate,
    Run,
    baselines_file,
    best_of_file,
    gate_file,
    oracle_file,
    pipeline_dir,
    pool_dir,
    run_dir,
    warmstart_dir,
)
from experiments.webpool import CATEGORIES, HELDOUT_FILE, POOL_FILE, write_pool
from experiments.webpool import load_config as load_pool_config
from jobs.config import PipelineConfig, resolve_paths
from jobs.downstream import submit_downstream
from jobs.pipeline import connect_ray, run_pipeline, stage_hashes
from jobs.stages import Context
from jobs.stages.evaluate import evaluation_sets
from reporting.experiment_report import write_report
from training.evaluate import predicted_tokens, unigram_loss
from training.loop import TrainConfig
from training.stats import mean_interval
from training.subsets import FIXED_SUBSETS
from training.tokenizer import load_tokenizer

log = get_logger(__name__)
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
        (
            "name",
            "pipeline",
            "seeds",
            "arms",
            "ablations",
            "ablation_seed",
            "compare_to",
            "pool",
            "primary",
            "gate",
            "eval_every",
            "best_of",
        ),
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
        raise ValueError(f"{path}: {e}") from e

    # The fixed subsets the arms train on are computed once, by the main pipeline's select stage.
    arm_subsets = {(spec or {}).get("subset") for spec in _mapping(raw["arms"], f"{path}: arms").values()}

    def pipeline(overrides: dict, where: str) -> PipelineConfig:
        merged = _merge(raw["pipeline"], overrides)
        if not overrides:
            also = [*(merged.get("select") or {}).get("also", [])]
            also += [s for s in FIXED_SUBSETS if s in arm_subsets and s not in also and s != "greedi"]
            merged = _merge(merged, {"select": {"also": also}})
        cfg = resolve_paths(build_section(PipelineConfig, merged, where, str(path)), base)
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
    eval_every = raw.get("eval_every")
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(f"{path}: 'eval_every' must be an integer >= 1 or absent, got {eval_every!r}")
    for arm, spec in arms.items():
        spec = dict(_mapping(spec or {}, f"{path}: arms.{arm}"))
        factor = spec.pop("steps_factor", 1)
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"{path}: arms.{arm}.steps_factor must be an integer >= 1, got {factor!r}")
        arm_seeds = spec.pop("seeds", seeds)
        if not (isinstance(arm_seeds, list) and arm_seeds and all(isinstance(s, int) and s >= 0 for s in arm_seeds)):
            raise ValueError(f"{path}: arms.{arm}.seeds must be a non-empty list of integers >= 0, got {arm_seeds!r}")
        oracle = spec.pop("oracle", None)
        if oracle is not None and oracle not in CATEGORIES:
            raise ValueError(f"{path}: arms.{arm}.oracle must be a pool category (one of {', '.join(CATEGORIES)})")
        if oracle is not None:
            if "pool" not in raw:
                raise ValueError(f"{path}: arms.{arm}.oracle needs a 'pool' (its categories name the oracle's data)")
            if "subset" in spec:
                raise ValueError(f"{path}: arms.{arm}: an oracle arm trains on its category; drop 'subset'")
            # The file is written by the runner (oracle_file) once the pool is prepared.
            spec |= {"subset": "file", "subset_file": f"oracle:{oracle}"}
        train = _train_config(main.train, spec, f"arms.{arm}", path)
        train = dataclasses.replace(train, steps=train.steps * factor)
        snapshots = {main.train.steps * i for i in range(1, factor)}
        if eval_every:  # held-out loss along the way: curves and steps-to-target
            snapshots |= set(range(eval_every, train.steps, eval_every))
        runs += [
            Run(
                variant=MAIN,
                arm=arm,
                seed=s,
                train=dataclasses.replace(train, seed=s),
                snapshots=tuple(sorted(snapshots)),
                group=MAIN,
                oracle=oracle,
            )
            for s in arm_seeds
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
    gate = None
    if "gate" in raw:
        spec = _check_keys(raw["gate"], ("arm", "against"), f"{path}: gate")
        if any(spec.get(k) not in arms for k in ("arm", "against")):
            raise ValueError(f"{path}: gate.arm and gate.against must name arms (of {', '.join(arms)}), got {spec!r}")
        gate = Gate(arm=spec["arm"], against=spec["against"])
    pool = None
    if "pool" in raw:
        pool = (base / str(raw["pool"])).resolve()
        if not pool.is_file():
            raise ValueError(f"{path}: pool config {pool} does not exist")
    best_of = None
    if "best_of" in raw:
        spec = _check_keys(raw["best_of"], ("arms", "seeds"), f"{path}: best_of")
        names, extra = spec.get("arms"), spec.get("seeds")
        if not isinstance(names, list) or not names or any(a not in arms for a in names):
            raise ValueError(f"{path}: best_of.arms must list arms (of {', '.join(arms)}), got {names!r}")
        if not isinstance(extra, list) or not extra or not all(isinstance(x, int) and x >= 0 for x in extra):
            raise ValueError(f"{path}: best_of.seeds must be a non-empty list of integers >= 0, got {extra!r}")
        best_of = BestOf(arms=names, seeds=extra)
    primary = raw.get("primary", "heldout")
    sets = ["heldout", *([Path(HELDOUT_FILE).stem] if pool else []), *(Path(e).stem for e in main.evaluate.external)]
    if primary not in sets:
        raise ValueError(f"{path}: 'primary' must name an evaluation set (one of {', '.join(sets)}), got {primary!r}")
    return Experiment(
        name=str(raw["name"]),
        pipelines=pipelines,
        runs=runs,
        notes=notes,
        compare_to=compare_to,
        pool=pool,
        primary=primary,
        gate=gate,
        best_of=best_of,
    )


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


def with_pool(exp: Experiment, root: Path) -> Experiment:
    """Build the experiment's pool (once: the builder is deterministic) and make it every variant's
    corpus; its clean held-out passages become the first external evaluation set."""
    folder, cfg = pool_dir(root), load_pool_config(exp.pool)
    manifest = folder / "manifest.json"  # written last
    if not manifest.exists():
        write_pool(cfg, str(folder))
    elif json.loads(manifest.read_text())["config"] != section_dict(cfg):
        # Its runs were trained on the old pool: rebuilding under them would mix two pools in one report.
        raise ValueError(
            f"{folder} was built from another pool config than {exp.pool} (changed since): give the experiment "
            "a new name or --out for the new pool, or delete that experiment folder to start over"
        )
    pool, heldout = str(folder / POOL_FILE), str(folder / HELDOUT_FILE)

    def use(cfg: PipelineConfig) -> PipelineConfig:
        external = [heldout, *[p for p in cfg.evaluate.external if p != heldout]]
        return dataclasses.replace(
            cfg,
            corpus=dataclasses.replace(cfg.corpus, source=pool),
            evaluate=dataclasses.replace(cfg.evaluate, external=external),
        )

    return dataclasses.replace(exp, pipelines={v: use(cfg) for v, cfg in exp.pipelines.items()})


def with_oracles(exp: Experiment, root: Path) -> Experiment:
    """Write each oracle run's subset (a draw from its category of the prepared pool) and point its
    train config at it."""
    oracles = [r for r in exp.runs if r.oracle]
    if not oracles:
        return exp
    prepare = pipeline_dir(root, MAIN) / "prepare"
    ids, cats = sequence_categories(prepare, str(pool_dir(root) / POOL_FILE))
    budget = max(1, round(exp.pipelines[MAIN].select.fraction * len(ids)))  # the trainer's budget
    runs = []
    for run in exp.runs:
        if run.oracle:
            path = oracle_file(root, run.oracle, run.seed)
            if not path.exists():
                write_oracle(path, oracle_subset(ids, cats, run.oracle, budget=budget, seed=run.seed))
            run = dataclasses.replace(run, train=dataclasses.replace(run.train, subset_file=str(path)))
        runs.append(run)
    return dataclasses.replace(exp, runs=runs)


def write_baselines(root: Path, cfg: PipelineConfig, sets: dict[str, list]) -> None:
    """The loss on each evaluation set of a unigram model of the training pool: an arm that does not
    beat it by far has learned word frequencies only, and its differences say little."""
    if baselines_file(root).exists():
        return
    prepare = pipeline_dir(root, MAIN) / "prepare"
    tok = load_tokenizer(str(prepare / PrepareOutputs.TOKENIZER), kind=cfg.model.kind)
    special = list(tok.all_special_ids)
    train = predicted_tokens(
        read_sequences(prepare / PrepareOutputs.SEQUENCES)[1], kind=cfg.model.kind, special_ids=special
    )
    RunDir.write_json(
        baselines_file(root),
        {
            f"unigram/{name}": unigram_loss(
                train, predicted_tokens(seqs, kind=cfg.model.kind, special_ids=special), len(tok)
            )
            for name, seqs in sets.items()
            if seqs
        },
    )


def judge_gate(root: Path, exp: Experiment, gate: Gate) -> dict:
    """The gate's verdict from the scored runs: the paired difference of the primary loss."""
    mine, theirs = primary_losses(root, exp, gate.arm), primary_losses(root, exp, gate.against)
    diffs = [mine[s] - theirs[s] for s in sorted(mine) if s in theirs]
    mean, half = mean_interval(diffs) if diffs else (float("nan"), None)
    passed = half is not None and mean + half < 0
    verdict = {
        "arm": gate.arm,
        "against": gate.against,
        "set": exp.primary,
        "differences": diffs,
        "mean": mean,
        "half_width": half,
        "passed": passed,
    }
    RunDir.write_json(gate_file(root), verdict)
    return verdict


def primary_losses(root: Path, exp: Experiment, arm: str) -> dict[int, float]:
    """Seed -> final primary loss of every scored main run of `arm`."""
    out = {}
    for run in exp.runs:
        scores = run_dir(root, run) / "eval.json"
        if run.arm == arm and run.group == MAIN and scores.exists():
            out[run.seed] = json.loads(scores.read_text())[f"final/{exp.primary}"]["loss"]
    return out


def with_best_of(exp: Experiment, root: Path) -> Experiment:
    """The `best_of` arm's extra runs, once chosen: the arm with the lowest mean primary loss over its
    scored seeds, recorded in best_of.json so a rerun and the report add the same runs."""
    if exp.best_of is None:
        return exp
    path = best_of_file(root)
    if not path.exists():
        scored = {a: primary_losses(root, exp, a) for a in exp.best_of.arms}
        means = {a: float(np.mean(list(losses.values()))) for a, losses in scored.items() if losses}
        if len(means) < len(exp.best_of.arms):
            return exp  # not every candidate is scored yet
        RunDir.write_json(path, {"chosen": min(means, key=means.get), "mean_primary_loss": means})
    chosen = json.loads(path.read_text())["chosen"]
    template = next(r for r in exp.runs if r.arm == chosen and r.group == MAIN)
    have = {r.seed for r in exp.runs if r.arm == chosen}
    extra = [
        dataclasses.replace(template, seed=s, train=dataclasses.replace(template.train, seed=s))
        for s in exp.best_of.seeds
        if s not in have
    ]
    return dataclasses.replace(exp, runs=exp.runs + extra)


def run_experiment(exp: Experiment, out: Path) -> Path:
    """Train and score every run (skipping finished ones); returns the experiment folder. With a gate,
    its two arms run first, and the rest only if the gate's arm clearly beats the other."""
    root = out / exp.name
    if exp.pool is not None:
        exp = with_pool(exp, root)
    pipes = {v: pipeline_dir(root, v) for v in exp.pipelines}
    connect_ray(exp.pipelines[MAIN])
    for variant, cfg in exp.pipelines.items():  # the main pipeline first: the others link its stages
        if variant != MAIN:
            share_stages(pipes[MAIN], pipes[variant], exp.pipelines[MAIN], cfg)
        run_pipeline(cfg, pipes[variant], only=list(SELECTION_STAGES))
    exp = with_oracles(exp, root)
    sets = evaluation_sets(Context(exp.pipelines[MAIN], RunDir(pipes[MAIN])))
    write_baselines(root, exp.pipelines[MAIN], sets)
    warm = warmstart_dir(root)  # the common starting point, scored like an arm
    warm.mkdir(parents=True, exist_ok=True)
    scoring = {
        warm: _pending_scores(
            warm, {"final": pipes[MAIN] / "warmstart" / TrainOutputs.MODEL}, exp.pipelines[MAIN], sets
        )
    }
    runs = exp.runs
    if exp.gate is not None:
        first = [r for r in runs if r.group == MAIN and r.arm in (exp.gate.arm, exp.gate.against)]
        _train_and_score(root, exp, first, scoring, sets)
        verdict = judge_gate(root, exp, exp.gate)
        if not verdict["passed"]:
            write_report(root, exp)
            raise SystemExit(
                f"[ingenious] experiment {exp.name}: gate failed: {exp.gate.arm} - {exp.gate.against} "
                f"{exp.primary} loss = {verdict['mean']:.4f} ± {verdict['half_width'] or float('nan'):.4f} "
                "(t 95% CI) does not exclude 0. The pool cannot separate arms: raise its redundancy and noise "
                f"(the pool config {exp.pool}) or train longer, before spending the other runs. "
                f"Report so far: {root / 'results.md'}"
            )
        log.info(
            f"experiment {exp.name}: gate passed ({exp.gate.arm} - {exp.gate.against} = "
            f"{verdict['mean']:.4f} ± {verdict['half_width']:.4f})"
        )
        runs = [r for r in runs if r not in first]
    _train_and_score(root, exp, runs, scoring, sets)
    more = with_best_of(exp, root)
    if more is not exp:
        _train_and_score(root, more, [r for r in more.runs if r not in exp.runs], scoring, sets)
    write_report(root, more)
    return root


def _train_and_score(root: Path, exp: Experiment, runs: list[Run], scoring: dict[Path, dict], sets: dict) -> None:
    """Train every unfinished run of `runs` and score each as it finishes; returns when all are scored."""
    pipes = {v: pipeline_dir(root, v) for v in exp.pipelines}

    def score(run: Run, folder: Path) -> None:
        models = {"final": folder / TrainOutputs.MODEL} | {
            f"step{s}": folder / f"{TrainOutputs.MODEL}-step{s}" for s in run.snapshots
        }
        scoring[folder] = _pending_scores(folder, models, exp.pipelines[run.variant], sets)

    # Every run is submitted at once, main arms seed by seed and then the ablations, the longest first
    # within a seed, so no CPU waits behind a barrier; each run is scored as soon as it is trained.
    order = sorted(runs, key=lambda r: (r.group != MAIN, r.seed if r.group == MAIN else 0, -r.train.steps))
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
            init_from=str(pipes[run.variant] / "warmstart" / TrainOutputs.MODEL),
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
        log.info(f"experiment {exp.name}: trained {run.variant}/{run.key} ({len(training)} runs left)")
        score(run, folder)
        _flush_ready(scoring)
    _flush_ready(scoring, wait=True)


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
    configure()
    base = Path(os.environ.get("INGENIOUS_BASE_DIR") or Path.cwd())
    if "://" in args.out:  # variants share finished stages by symbolic links, which object stores lack
        raise SystemExit(
            f"--out {redact(args.out)}: an experiment's folder must be a local path (on a cluster, one "
            "every node mounts); object storage is not supported for experiments"
        )
    try:
        experiments = [load_experiment(p, base=base) for p in (args.config or DEFAULT_CONFIGS)]
    except ValueError as e:
        log.debug("the experiment config was rejected", exc_info=True)
        raise SystemExit(f"config error: {redact(str(e))}") from None
    for exp in experiments:
        log.info(
            f"experiment {exp.name}: {len(exp.runs)} runs, variants {', '.join(exp.pipelines)}\n"
            f"{yaml.safe_dump(redact_tree(exp.pipelines[MAIN].to_dict()), sort_keys=False)}"
        )
        try:
            root = run_experiment(exp, base / args.out)
        except ValueError as e:  # bad input found once the run is under way (a pool, a subset file)
            log.debug("the experiment stopped", exc_info=True)
            raise SystemExit(f"error: {redact(str(e))}") from None
        print((root / "results.md").read_text(), flush=True)
        print(f"results: {root / 'results.md'}", flush=True)


if __name__ == "__main__":
    main()
