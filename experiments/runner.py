"""The paper's comparison at small scale: arms x seeds trained from one warm start, then scored.

run_experiment runs an Experiment (experiments/config.py reads one from its config file). Every
variant shares what its settings share: the warm start is trained once, and an ablation that changes
only `select` reuses the embeddings. Each arm is one task (train.cpus_per_worker CPUs), all submitted at once; each
model is scored by held-out LM loss on every evaluation set and by `evaluate.downstream` fine-tuning.
A finished arm, score or stage is never redone, so a rerun resumes after an interruption. The command
(jobs/experiment.py) then writes the report (reporting/experiment_report.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actors.trainer import launch_args, train_in_task
from dataio.configfile import section_dict
from dataio.contracts import PrepareOutputs, TrainOutputs
from dataio.log import get_logger
from dataio.rundir import RunDir, read_sequences
from experiments.categories import oracle_subset, sequence_categories, write_oracle
from experiments.diagnostics import diagnose, json_ready, markdown
from experiments.layout import (
    MAIN,
    SELECTION_STAGES,
    Experiment,
    Gate,
    Run,
    baselines_file,
    best_of_file,
    diagnostics_file,
    downstream_file,
    eval_file,
    gate_file,
    oracle_file,
    pipeline_dir,
    pool_dir,
    run_dir,
    train_file,
    warmstart_dir,
)
from experiments.webpool import HELDOUT_FILE, MANIFEST_FILE, POOL_FILE, write_pool
from experiments.webpool import load_config as load_pool_config
from jobs.config import PipelineConfig
from jobs.downstream import downstream_tasks
from jobs.executor import Executor, Task
from jobs.pipeline import connect_ray, run_pipeline, stage_hashes
from jobs.reselect import Reselector
from jobs.stages import Context
from jobs.stages.evaluate import evaluation_sets, evaluation_tasks
from jobs.stages.train import train_resources
from training.evaluate import predicted_tokens, unigram_loss
from training.loop import TrainConfig
from training.stats import mean_interval
from training.tokenizer import load_tokenizer

log = get_logger(__name__)


def share_stages(root: Path, variant: Path, base_cfg: PipelineConfig, cfg: PipelineConfig) -> None:
    """Link the base pipeline's finished stages whose hash this variant shares (same settings and
    inputs), so an ablation trains from the same warm start and recomputes only what it changes."""
    base_run, mine, theirs = RunDir(root), stage_hashes(cfg), stage_hashes(base_cfg)
    variant.mkdir(parents=True, exist_ok=True)
    for stage in SELECTION_STAGES:
        link = variant / stage
        if mine[stage] == theirs[stage] and base_run.is_done(stage, theirs[stage]) and not link.exists():
            link.symlink_to((root / stage).resolve(), target_is_directory=True)


class Scores:
    """The score tasks of each trained model folder: held-out loss of each of its models (the final one
    and any snapshots) on each set, and fine-tuning of the final model. A folder's eval.json and
    downstream.json are written once all of its tasks have finished; what a folder has is not redone."""

    def __init__(self, executor: Executor, sets: dict[str, list]):
        self.executor, self.sets, self.pending = executor, sets, {}

    def submit(self, folder: Path, models: dict[str, Path], cfg: PipelineConfig) -> None:
        ex, pending = self.executor, {}
        if not eval_file(folder).exists():
            tasks = evaluation_tasks({m: str(d) for m, d in models.items()}, self.sets, cfg)
            pending["eval"] = {key: ex.submit(task) for key, task in tasks.items()}
        if cfg.evaluate.downstream.tasks and not downstream_file(folder).exists():
            named = downstream_tasks(
                {folder.name: str(models["final"])},
                cfg.evaluate.downstream,
                kind=cfg.model.kind,
                gpus_per_task=ex.gpus("auto"),
            )
            pending["downstream"] = [ex.submit(task) for _, task in named]
        self.pending[folder] = pending

    def flush(self, *, wait: bool = False) -> None:
        """Write the scores of every folder whose tasks have all finished (all of them if `wait`)."""
        for folder, pending in list(self.pending.items()):
            flat = list(pending.get("eval", {}).values()) + list(pending.get("downstream", []))
            if wait or self.executor.all_done(flat):
                if "eval" in pending:
                    evals = pending["eval"]
                    RunDir.write_json(eval_file(folder), dict(zip(evals, self.executor.get(list(evals.values())))))
                if "downstream" in pending:
                    RunDir.write_json(downstream_file(folder), {"rows": self.executor.get(pending["downstream"])})
                del self.pending[folder]


def with_pool(exp: Experiment, root: Path) -> Experiment:
    """Build the experiment's pool (once: the builder is deterministic) and make it every variant's
    corpus; its clean held-out passages become the first external evaluation set."""
    folder, cfg = pool_dir(root), load_pool_config(exp.pool)
    manifest = folder / MANIFEST_FILE  # written last
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


def write_diagnostics(root: Path) -> None:
    """The main variant's embedding space judged against the pool's categories before any training
    (experiments/diagnostics.py), once: diagnostics.json and its table beside it."""
    path = diagnostics_file(root)
    if not path.exists():
        report = json_ready(diagnose(str(pipeline_dir(root, MAIN)), str(pool_dir(root))))
        path.with_suffix(".md").write_text(markdown(report) + "\n")
        RunDir.write_json(path, report)  # last: it marks the diagnostics done


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
        scores = eval_file(run_dir(root, run))
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


@dataclass(kw_only=True)
class Outcome:
    """What run_experiment leaves for its caller (the report, the command's exit)."""

    root: Path  # the experiment folder
    experiment: Experiment  # as run: oracle subset files set, and the `best_of` rule's extra runs once chosen
    gate: dict | None = None  # the gate's verdict (judge_gate), where the experiment has a gate

    @property
    def gate_failed(self) -> bool:
        return self.gate is not None and not self.gate["passed"]


def run_experiment(exp: Experiment, out: Path) -> Outcome:
    """Train and score every run (skipping finished ones) into the folder out/<name>. With a gate, its
    two arms run first, and the rest only if the gate's arm clearly beats the other: a failed gate
    returns at once, its verdict in the outcome."""
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
    if exp.pool is not None:
        write_diagnostics(root)
    sets = evaluation_sets(Context(exp.pipelines[MAIN], RunDir(pipes[MAIN])))
    write_baselines(root, exp.pipelines[MAIN], sets)
    warm = warmstart_dir(root)  # the common starting point, scored like an arm
    warm.mkdir(parents=True, exist_ok=True)
    scores = Scores(Executor(), sets)
    scores.submit(warm, {"final": pipes[MAIN] / "warmstart" / TrainOutputs.MODEL}, exp.pipelines[MAIN])
    runs, verdict = exp.runs, None
    if exp.gate is not None:
        first = [r for r in runs if r.group == MAIN and r.arm in (exp.gate.arm, exp.gate.against)]
        _train_and_score(root, exp, first, scores)
        verdict = judge_gate(root, exp, exp.gate)
        if not verdict["passed"]:
            return Outcome(root=root, experiment=exp, gate=verdict)
        log.info(
            f"experiment {exp.name}: gate passed ({exp.gate.arm} - {exp.gate.against} = "
            f"{verdict['mean']:.4f} ± {verdict['half_width']:.4f})"
        )
        runs = [r for r in runs if r not in first]
    _train_and_score(root, exp, runs, scores)
    more = with_best_of(exp, root)
    if more is not exp:
        _train_and_score(root, more, [r for r in more.runs if r not in exp.runs], scores)
    return Outcome(root=root, experiment=more, gate=verdict)


def _train_and_score(root: Path, exp: Experiment, runs: list[Run], scores: Scores) -> None:
    """Train every unfinished run of `runs` and score each as it finishes; returns when all are scored."""
    ex = scores.executor

    def score(run: Run, folder: Path) -> None:
        models = {"final": folder / TrainOutputs.MODEL} | {
            f"step{s}": folder / f"{TrainOutputs.MODEL}-step{s}" for s in run.snapshots
        }
        scores.submit(folder, models, exp.pipelines[run.variant])

    # Every run is submitted at once, main arms seed by seed and then the ablations, the longest first
    # within a seed, so no CPU waits behind a barrier; each run is scored as soon as it is trained.
    order = sorted(runs, key=lambda r: (r.group != MAIN, r.seed if r.group == MAIN else 0, -r.train.steps))
    training, reselectors, held_back = {}, {}, []
    capacity = ex.cpus()

    def start(run: Run, folder: Path) -> None:
        task = ex.submit(train_task(root, exp, run, folder))
        training[task] = (run, folder)
        if run.train.reselect is not None:  # its draws after the first, from its own snapshots, beside it
            reselectors[task] = Reselector(reselect_context(root, exp, run), str(folder), run.train.reselect_plan())
            reselectors[task].start()

    def admit() -> None:
        # A re-selecting run starts only while all those in flight, trainers and re-selections, fit the
        # cluster at once: trainers waiting for their draws could otherwise hold every CPU their
        # re-selections need. (Other runs hold CPUs too, but they finish.)
        while held_back:
            in_flight = sum(reselect_cpus(training[t][0].train) for t in reselectors)
            if reselectors and in_flight + reselect_cpus(held_back[0][0].train) > capacity:
                return
            start(*held_back.pop(0))

    for run in order:
        folder = run_dir(root, run)
        if train_file(folder).exists():
            score(run, folder)
        elif run.train.reselect is None:
            start(run, folder)
        elif reselect_cpus(run.train) > capacity:
            raise ValueError(
                f"{run.arm}: its trainer and train.reselect need {reselect_cpus(run.train):g} CPUs at once; "
                f"the cluster has {capacity:g}"
            )
        else:
            held_back.append((run, folder))
    admit()
    while training:
        done = ex.first_done(list(training))
        run, folder = training.pop(done)
        if done in reselectors:
            reselectors.pop(done).stop()  # a failed re-selection is the cause of its trainer's failure
            admit()
        RunDir.write_json(
            train_file(folder),
            {
                **ex.get(done),
                "variant": run.variant,
                "arm": run.arm,
                "seed": run.seed,
                "train": dataclasses.asdict(run.train),
            },
        )
        log.info(f"experiment {exp.name}: trained {run.variant}/{run.key} ({len(training)} runs left)")
        score(run, folder)
        scores.flush()
    scores.flush(wait=True)


def reselect_cpus(train: TrainConfig) -> float:
    """The CPUs a run with train.reselect holds at once: its trainer's and its re-selection's."""
    return train.cpus_per_worker + train.reselect.num_actors * train.reselect.cpus_per_actor


def reselect_context(root: Path, exp: Experiment, run: Run) -> Context:
    """What a run's re-selection reads: its variant's prepared pool and config, with the run's train settings
    (train.reselect), on its own executor (the scoring loop's waits on the other)."""
    cfg = dataclasses.replace(exp.pipelines[run.variant], train=run.train)
    return Context(cfg, RunDir(pipeline_dir(root, run.variant)), executor=Executor())


def train_task(root: Path, exp: Experiment, run: Run, folder: Path) -> Task:
    """One run as one task: the trainer of a one-worker Ray Train run, from its variant's warm start."""
    pipe, pipes = exp.pipelines[run.variant], pipeline_dir(root, run.variant)
    args = launch_args(
        train=run.train,
        model=pipe.model,
        data=pipes / "prepare",
        out_dir=folder,
        select_dir=pipes / "select",
        fraction=pipe.select.fraction,
        init_from=str(pipes / "warmstart" / TrainOutputs.MODEL),
    )
    one_worker = dataclasses.replace(train_resources(run.train), actors=1)  # one task, not a Ray Train group
    return Task(train_in_task, (args,), {"snapshots": run.snapshots}, one_worker)
