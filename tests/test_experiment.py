"""The experiment runner: config validation, and a tiny arms x seeds experiment on a real local Ray
cluster that shares stages between variants, scores every model and resumes without retraining."""

import json

import pytest

from experiments.config import load_experiment
from experiments.layout import MAIN
from jobs.experiment import run_and_report as run_experiment  # the command's run, then its report
from tests.conftest import write_corpus, write_sst2

PIPELINE = """
pipeline:
  name: tiny-exp
  model: {{kind: bert, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 64}}
  corpus: {{source: {corpus}}}
  prepare: {{vocab_size: 700, documents_per_shard: 60, heldout_fraction: 0.15}}
  warmstart: {{steps: 4, global_batch_size: 8, warmup_steps: 1, checkpoint_every: 2}}
  embed: {{layer: -1, batch_size: 16}}
  select: {{fraction: 0.25, knn_k: 5}}
  train: {{steps: 4, global_batch_size: 8, warmup_steps: 1, subset: ingenious, redraw_every: 2, checkpoint_every: 4}}
  evaluate: {{max_sequences: 24, downstream: {{tasks: [sst2], data_dir: "{glue}", seeds: [0], epochs: 1}}}}
"""
EXPERIMENT = (
    "name: tiny-exp\n"
    + PIPELINE
    + """
seeds: [0, 1]
compare_to: [full, ingenious]
arms:
  full: {{subset: full, redraw_every: null}}
  ingenious: {{subset: ingenious}}
  long: {{subset: full, redraw_every: null, steps_factor: 2}}
  reselect: {{subset: ingenious, reselect: {{every: 2, cpus_per_actor: 0.5}}}}
ablations:
  one-draw: {{train: {{redraw_every: null}}, note: one draw}}
  random-2: {{pipeline: {{select: {{partition: random, num_partitions: 2}}}}}}
"""
)


def write(tmp_path, text: str, **paths) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(text.format(corpus="./c.jsonl", glue="./g", **paths))
    return str(path)


def test_config_builds_every_run(tmp_path):
    exp = load_experiment(write(tmp_path, EXPERIMENT), base=tmp_path)
    assert list(exp.pipelines) == [MAIN, "random-2"]
    assert [(r.arm, r.seed) for r in exp.runs] == [
        ("full", 0),
        ("full", 1),
        ("ingenious", 0),
        ("ingenious", 1),
        ("long", 0),
        ("long", 1),
        ("reselect", 0),
        ("reselect", 1),
        ("one-draw", 0),
        ("random-2", 0),
    ]
    long = next(r for r in exp.runs if r.arm == "long")
    assert long.train.steps == 8 and long.snapshots == (4,) and long.train.subset == "full"
    one_draw = next(r for r in exp.runs if r.arm == "one-draw")
    assert one_draw.variant == MAIN and one_draw.train.redraw_every is None and one_draw.train.subset == "ingenious"
    assert exp.pipelines["random-2"].select.num_partitions == 2 and exp.pipelines[MAIN].select.num_partitions is None
    assert exp.pipelines[MAIN].corpus.source == str(tmp_path / "c.jsonl")  # relative paths from the base folder


@pytest.mark.parametrize(
    "edit, message",
    [
        (("seeds: [0, 1]", "seeds: [0, 0]"), "distinct integers"),
        (("arms:", "armz: {{}}\narms:"), "unknown key 'armz'"),
        (("ingenious: {{subset: ingenious}}", "ingenious: {{subst: ingenious}}"), "unknown key 'arms.ingenious.subst'"),
        (
            ("ingenious: {{subset: ingenious}}", "ingenious: {{subset: best}}"),
            "'arms.ingenious.subset' must be one of full, ingenious, greedi, random, semdedup, d4, perplexity, "
            "dsir, classifier, file, got 'best'",
        ),
        (("steps_factor: 2", "steps_factor: 0"), "arms.long.steps_factor must be an integer >= 1"),
        (("partition: random", "partitoin: random"), "ablations.random-2.pipeline.select.partitoin"),
        (("note: one draw", "notes: one draw"), "ablations.one-draw: unknown key 'notes'"),
        (("one-draw:", "full:"), "'full' names both an arm and an ablation"),
        (("long:", "warmstart:"), "'warmstart' cannot name an arm"),
        (("seeds: [0, 1]", "seeds: [0, 1]\nablation_seed: one"), "'ablation_seed' must be an integer"),
        (
            (
                "arms:\n  full: {{subset: full, redraw_every: null}}\n  ingenious: {{subset: ingenious}}\n"
                "  long: {{subset: full, redraw_every: null, steps_factor: 2}}\n"
                "  reselect: {{subset: ingenious, reselect: {{every: 2, cpus_per_actor: 0.5}}}}\n",
                "arms: [full]\n",
            ),
            "arms must be a mapping",
        ),
        (("arms:", "arms: [full]\nablations:"), r"exp\.yaml, line 22: duplicate key 'ablations' \(first on line 17\)"),
        (("seeds: [0, 1]", "seeds: [0, -1]"), "'seeds' must be >= 0"),
        (("name: tiny-exp\n\n", "name: ../../x\n\n"), "'name' '../../x' is not a plain name"),
        (("seeds: [0, 1]", "seeds: [0, 1]\nablation_seed: -2"), "'ablation_seed' must be an integer >= 0"),
        (("compare_to: [full, ingenious]", "compare_to: [fulll]"), "'compare_to' must list arms"),
    ],
)
def test_config_errors_name_the_key(tmp_path, edit, message):
    path = write(tmp_path, EXPERIMENT.replace(*edit))
    with pytest.raises(ValueError, match=message) as err:
        load_experiment(path, base=tmp_path)
    assert "exp.yaml" in str(err.value)


def test_missing_encoder_package_is_named(tmp_path):
    text = EXPERIMENT.replace(
        "one-draw:", "minilm: {{pipeline: {{embed: {{encoder: 'package:no_such_pkg/model'}}}}}}\n  one-draw:"
    )
    with pytest.raises(ValueError, match="no installed Python package named 'no_such_pkg'"):
        load_experiment(write(tmp_path, text), base=tmp_path)


@pytest.mark.integration
def test_tiny_experiment_runs_scores_and_resumes(ray_cluster, tmp_path):
    write_corpus(tmp_path / "c.jsonl", 160)
    write_sst2(tmp_path / "g")
    exp = load_experiment(write(tmp_path, EXPERIMENT), base=tmp_path)
    root = run_experiment(exp, tmp_path / "runs")

    variant = root / "pipelines" / "random-2"  # shares prepare, warm start and embeddings; selects anew
    assert all((variant / s).is_symlink() for s in ("prepare", "warmstart", "embed"))
    assert not (variant / "select").is_symlink() and (variant / "select" / "_SUCCESS").exists()
    runs = {(r.variant, r.key): root / "runs" / r.variant / r.key for r in exp.runs}
    for folder in runs.values():
        scores = json.loads((folder / "eval.json").read_text())
        assert {"final/heldout"} <= set(scores) and all(v["loss"] > 0 for v in scores.values())
        assert [r["task"] for r in json.loads((folder / "downstream.json").read_text())["rows"]] == ["sst2"]
        assert (
            len((folder / "metrics.jsonl").read_text().splitlines())
            == json.loads((folder / "train.json").read_text())["steps"]
        )
    long = runs[(MAIN, "long/seed0")]
    assert (long / "model-step4").is_dir() and "step4/heldout" in json.loads((long / "eval.json").read_text())

    def losses(key):
        return [json.loads(line)["loss"] for line in (runs[key] / "metrics.jsonl").read_text().splitlines()]

    assert losses((MAIN, "full/seed0")) != losses((MAIN, "full/seed1"))  # seeds differ
    assert losses((MAIN, "ingenious/seed0")) != losses((MAIN, "one-draw/seed0"))  # redraws change the data
    # Re-selected beside each trainer: draw 0 as the ingenious arm's, draw 1 from the run's own snapshot at
    # step 1. Two such runs (trainer and re-selection 1.5 CPUs each) on 2 CPUs run one after the other: at
    # once, both trainers would wait for draws that their re-selections find no CPU to select.
    for seed in (0, 1):
        reselected = runs[(MAIN, f"reselect/seed{seed}")] / "reselect"
        assert (reselected / "1" / "model" / "_COMPLETE").exists() and (reselected / "draw-1.parquet").exists()
        assert json.loads((reselected / "switch-1.json").read_text())["step"] == 2
        mine, plain = losses((MAIN, f"reselect/seed{seed}")), losses((MAIN, f"ingenious/seed{seed}"))
        assert mine[:2] == plain[:2] and mine[2:] != plain[2:]

    results = (root / "results.md").read_text()
    for row in (
        "| full | full | - | 4 |",
        "| ingenious | ingenious | 2 | 4 |",
        "| long | full | - | 8 |",
        "| long @ step 4 |",
        "| one-draw | one draw |",
        "| random-2 |",
        "| reselect |",
    ):
        assert row in results, row
    assert "Paired by seed against `full`" in results and "Paired by seed against `ingenious`" in results
    assert "(n=2)" in results and (root / "loss_curves.png").stat().st_size > 10_000

    # Resume: a finished run is never retrained; a run whose outputs were lost is redone identically.
    stamps = {k: (f / "train.json").stat().st_mtime_ns for k, f in runs.items()}
    before = losses((MAIN, "ingenious/seed1")), (runs[(MAIN, "ingenious/seed1")] / "eval.json").read_text()
    for name in ("train.json", "eval.json", "downstream.json"):
        (runs[(MAIN, "ingenious/seed1")] / name).unlink()
    run_experiment(exp, tmp_path / "runs")
    after = {k: (f / "train.json").stat().st_mtime_ns for k, f in runs.items()}
    assert [k for k in runs if after[k] != stamps[k]] == [(MAIN, "ingenious/seed1")]
    assert (losses((MAIN, "ingenious/seed1")), (runs[(MAIN, "ingenious/seed1")] / "eval.json").read_text()) == before
