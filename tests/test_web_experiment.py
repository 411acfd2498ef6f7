"""The web-pool experiment's machinery: an oracle arm from the pool's categories, the gate, extra seeds
for the best of a group, held-out curves and steps-to-target, each arm's composition by category."""

import gzip
import json
import random

import numpy as np
import pytest
import yaml

from experiments.categories import composition, oracle_subset
from experiments.config import load_experiment
from experiments.layout import MAIN, Gate
from experiments.runner import Outcome, judge_gate
from jobs.experiment import run_and_report as run_experiment  # the command's run, then its report
from reporting.pool_report import steps_to_target
from training.evaluate import predicted_tokens, unigram_loss

WORDS = "river stone city music light garden winter market bridge forest paper engine island valley".split()


def write_sources(tmp_path):
    rng = random.Random(0)
    rows = []
    for k in range(120):
        paras = [
            " ".join(
                f"The {rng.choice(WORDS)} of art{k} was {rng.choice(WORDS)} in {rng.randint(1000, 2000)} and "
                + " ".join(rng.choices(WORDS, k=rng.randint(4, 10)))
                + "."
                for _ in range(rng.randint(3, 6))
            )
            for _ in range(4)
        ]
        rows.append({"id": str(k), "title": f"T{k}", "text": "\n".join(paras)})
    wiki = tmp_path / "wiki.jsonl.gz"
    wiki.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    bio = tmp_path / "bio.txt"
    bio.write_text(
        "\n".join(" ".join(f"Patients bio{i} with renal disease improved." for _ in range(10)) for i in range(60))
    )
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        yaml.safe_dump(
            {
                "documents": 240,
                "passage_words": 40,
                "min_passage_words": 15,
                "max_passages_per_article": 3,
                "heldout_passages": 20,
                "clean_source": str(wiki),
                "off_domain_sources": [str(bio)],
                "near_duplicate": {"max_copies": 20},
            }
        )
    )
    return pool


EXPERIMENT = """
name: tiny-web
pool: pool.yaml
primary: heldout_clean
eval_every: 2
pipeline:
  name: tiny-web
  model: {kind: gpt2, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 64, dropout: 0.0}
  prepare: {vocab_size: 600, documents_per_shard: 120, heldout_fraction: 0.0}
  warmstart: {steps: 4, global_batch_size: 8, warmup_steps: 1, schedule: constant, checkpoint_every: 4}
  embed: {layer: -1, batch_size: 32, sequence_loss: true}
  select: {fraction: 0.25, knn_k: 5, center: true}
  train: {steps: 6, global_batch_size: 8, warmup_steps: 0, schedule: constant, cooldown_steps: 2,
          init_optimizer: true, subset: ingenious, redraw_every: 3, checkpoint_every: 6}
  evaluate: {max_sequences: 16}
seeds: [0, 1]
compare_to: [random-fixed]
arms:
  random-fixed: {subset: random, redraw_every: null}
  oracle-clean: {oracle: clean, redraw_every: null}
  semdedup: {subset: semdedup, redraw_every: null, seeds: [0]}
  perplexity: {subset: perplexity, redraw_every: null, seeds: [0]}
best_of: {arms: [semdedup, perplexity], seeds: [1]}
"""


def test_steps_to_target_interpolates():
    curve = [(0, 5.0), (10, 4.0), (20, 3.0)]
    assert steps_to_target(curve, 3.5) == 15.0
    assert steps_to_target(curve, 4.0) == 10.0
    assert steps_to_target(curve, 5.5) == 0.0
    assert steps_to_target(curve, 2.9) is None


def test_unigram_baseline_by_hand():
    train = np.array([0, 0, 1, 2])  # add-one counts 3, 2, 2, 1 of 8
    assert unigram_loss(train, np.array([0, 3]), 4) == pytest.approx(-(np.log(3 / 8) + np.log(1 / 8)) / 2)
    seqs = [np.array([5, 1, 2, 6]), np.array([5, 3, 6])]
    assert predicted_tokens(seqs, kind="gpt2", special_ids=[5, 6]).tolist() == [1, 2, 6, 3, 6]
    assert predicted_tokens(seqs, kind="bert", special_ids=[5, 6]).tolist() == [1, 2, 3]


def test_oracle_subset_and_composition():
    ids = np.arange(10, dtype=np.int64)
    cats = np.array(["clean"] * 4 + ["garbage"] * 6, dtype=object)
    a, b = oracle_subset(ids, cats, "clean", budget=3, seed=0), oracle_subset(ids, cats, "clean", budget=3, seed=0)
    assert np.array_equal(a, b) and len(a) == 3 and set(a) <= {0, 1, 2, 3}
    assert len(oracle_subset(ids, cats, "clean", budget=9, seed=0)) == 4  # all of a small category
    with pytest.raises(ValueError, match="no training sequence of category 'boilerplate'"):
        oracle_subset(ids, cats, "boilerplate", budget=3, seed=0)
    assert composition(ids, cats, np.array([0, 0, 5, 9])) == {"clean": 0.5, "garbage": 0.5}


def test_gate_verdict_from_paired_losses(tmp_path):
    (tmp_path / "pool.yaml").write_text("documents: 10\n")
    exp = load_experiment(write(tmp_path, EXPERIMENT.replace("seeds: [0, 1]\n", "seeds: [0, 1, 2]\n")), base=tmp_path)

    def score(arm, seed, loss):
        folder = tmp_path / "runs" / MAIN / arm / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "eval.json").write_text(json.dumps({"final/heldout_clean": {"loss": loss}}))

    for seed, (oracle, rand) in enumerate([(3.0, 3.5), (3.1, 3.5), (3.05, 3.5)]):
        score("oracle-clean", seed, oracle)
        score("random-fixed", seed, rand)
    verdict = judge_gate(tmp_path, exp, Gate(arm="oracle-clean", against="random-fixed"))
    # mean -0.45, t 95% half-width 4.30 * 0.05 / sqrt(3) = 0.124: clearly below 0
    assert verdict["passed"] and verdict["differences"] == pytest.approx([-0.5, -0.4, -0.45])
    assert verdict["half_width"] == pytest.approx(0.124, abs=1e-3)
    score("oracle-clean", 1, 3.9)  # differences -0.5, +0.4, -0.45: the interval holds 0
    assert not judge_gate(tmp_path, exp, Gate(arm="oracle-clean", against="random-fixed"))["passed"]
    assert json.loads((tmp_path / "gate.json").read_text())["passed"] is False


def test_a_failed_gate_stops_the_command_after_its_report(tmp_path, monkeypatch):
    import jobs.experiment as command

    (tmp_path / "pool.yaml").write_text("documents: 10\n")
    gate = "gate: {arm: oracle-clean, against: random-fixed}\ncompare_to:"
    exp = load_experiment(write(tmp_path, EXPERIMENT.replace("compare_to:", gate)), base=tmp_path)
    failed = {"passed": False, "mean": 0.01, "half_width": 0.2}
    reported = []
    monkeypatch.setattr(command, "run_experiment", lambda e, out: Outcome(root=out / e.name, experiment=e, gate=failed))
    monkeypatch.setattr(command, "write_report", lambda root, e: reported.append(root))
    message = r"gate failed: oracle-clean - random-fixed heldout_clean loss = 0\.0100 ± 0\.2000 \(t 95% CI\)"
    with pytest.raises(SystemExit, match=message):
        command.run_and_report(exp, tmp_path / "runs")
    assert reported == [tmp_path / "runs" / "tiny-web"]  # the report of what ran is written first


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (("seeds: [0]}", "seeds: [-1]}"), "arms.semdedup.seeds must be a non-empty list"),
        (("oracle: clean,", "oracle: clean, subset: random,"), "an oracle arm trains on its category"),
        (("best_of: {arms: [semdedup, perplexity]", "best_of: {arms: [semdedup, nope]"), "best_of.arms must list"),
        (("eval_every: 2", "eval_every: 0"), "'eval_every' must be an integer >= 1"),
        (("compare_to:", "gate: {arm: oracle-clean, against: nope}\ncompare_to:"), "gate.arm and gate.against"),
        (("pool: pool.yaml", "pool: missing.yaml"), "pool config .*missing.yaml does not exist"),
        (("primary: heldout_clean", "primary: heldout_clena"), "'primary' must name an evaluation set .*heldout_clean"),
        (("oracle: clean,", "oracle: cleen,"), "arms.oracle-clean.oracle must be a pool category"),
    ],
)
def test_web_config_errors_name_the_key(tmp_path, edit, message):
    (tmp_path / "pool.yaml").write_text("documents: 10\n")
    with pytest.raises(ValueError, match=message):
        load_experiment(write(tmp_path, EXPERIMENT.replace(*edit)), base=tmp_path)


@pytest.mark.integration
def test_web_experiment_oracle_best_of_and_composition(ray_cluster, tmp_path):
    write_sources(tmp_path)
    exp = load_experiment(write(tmp_path, EXPERIMENT), base=tmp_path)
    select = exp.pipelines[MAIN].select
    assert {"semdedup", "perplexity"} <= set(select.also) and select.greedi_merge
    root = run_experiment(exp, tmp_path / "runs")

    # The pool config edited under a finished pool: refused, not silently ignored or rebuilt under its runs.
    pool_cfg = tmp_path / "pool.yaml"
    pool_cfg.write_text(pool_cfg.read_text().replace("documents: 240", "documents: 250"))
    with pytest.raises(ValueError, match="was built from another pool config"):
        run_experiment(load_experiment(write(tmp_path, EXPERIMENT), base=tmp_path), tmp_path / "runs")

    oracle = root / "oracles" / "clean-seed0.parquet"
    assert oracle.exists() and (root / "runs" / MAIN / "oracle-clean" / "seed1" / "train.json").exists()
    chosen = json.loads((root / "best_of.json").read_text())["chosen"]
    assert chosen in ("semdedup", "perplexity")
    assert (root / "runs" / MAIN / chosen / "seed1" / "eval.json").exists()  # the extra seed ran and was scored
    other = "perplexity" if chosen == "semdedup" else "semdedup"
    assert not (root / "runs" / MAIN / other / "seed1").exists()
    scores = json.loads((root / "runs" / MAIN / "random-fixed" / "seed0" / "eval.json").read_text())
    assert {"final/heldout_clean", "step2/heldout_clean", "step4/heldout_clean"} <= set(scores)

    results = (root / "results.md").read_text()
    assert "The primary metric is the `heldout_clean` loss" in results
    assert "| unigram model of the pool (word frequencies only) |" in results
    assert "Steps to reach `random-fixed`'s final heldout_clean loss" in results

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    lines = results.splitlines()
    header = cells(next(line for line in lines if line.startswith("| arm | ") and "distinct" in line))
    oracle_row = dict(
        zip(header, cells(next(line for line in lines if line.startswith("| oracle-clean |") and "%" in line)))
    )
    assert oracle_row["clean"] == "100.0%"  # the ceiling trained on clean passages only
    pool_row = dict(zip(header, cells(next(line for line in lines if line.startswith("| pool |")))))
    assert 0 < float(pool_row["clean"].rstrip("%")) < 100
