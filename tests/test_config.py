from pathlib import Path

import pytest

from jobs.config import PipelineConfig, load_config
from jobs.experiment import load_experiment

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(set(CONFIGS.glob("*.yaml")) - set(CONFIGS.glob("experiment-*.yaml"))),
                         ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("experiment-*.yaml")), ids=lambda p: p.name)
def test_shipped_experiment_configs_load(path):
    exp = load_experiment(path)  # the MiniLM ablation's encoder comes with the test (and experiment) extra
    assert exp.runs and all(isinstance(cfg, PipelineConfig) for cfg in exp.pipelines.values())
    assert {r.seed for r in exp.runs if r.group == "main"} >= {0}


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "select:\n  fractoin: 0.1\n")
    with pytest.raises(ValueError, match=r"c\.yaml: unknown key 'select\.fractoin' \(did you mean 'fraction'\?\)"):
        load_config(path)
    with pytest.raises(ValueError, match="unknown key 'selct'"):
        load_config(write(tmp_path, "selct: {}\n"))


def test_types_and_ranges_are_checked(tmp_path):
    with pytest.raises(ValueError, match="'train.steps' must be int"):
        load_config(write(tmp_path, "train: {steps: many}\n"))
    with pytest.raises(ValueError, match=r"select.fraction must be in \(0, 1\]"):
        load_config(write(tmp_path, "select: {fraction: 1.5}\n"))
    with pytest.raises(ValueError, match="divisible"):
        load_config(write(tmp_path, "train: {global_batch_size: 10, num_workers: 3}\n"))
    with pytest.raises(ValueError, match="embed.layer 9 is out of range"):
        load_config(write(tmp_path, "model: {num_layers: 2, hidden_size: 32, num_heads: 2}\n"))
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_sections_keep_defaults_for_unset_keys(tmp_path):
    cfg = load_config(write(tmp_path, "warmstart: {steps: 5}\nselect: {knn_k: 7}\n"))
    assert cfg.warmstart.steps == 5 and cfg.warmstart.subset == "full"
    assert cfg.select.knn_k == 7 and cfg.select.fraction == 0.25


def test_relative_paths_are_fixed_where_the_user_ran_the_command(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.jsonl").write_text("")
    text = ("model: {init_from: runs/general/train/model}\ncorpus: {source: data/corpus.jsonl}\n"
            "prepare: {tokenizer: bert-base-uncased}\nembed: {encoder: sentence-transformers/all-MiniLM-L6-v2}\n"
            "evaluate: {external: [../wiki.tokens], downstream: {tasks: [sst2], data_dir: ./glue}}\n")
    cfg = load_config(write(tmp_path, text), base=tmp_path)
    assert cfg.model.init_from == str(tmp_path / "runs/general/train/model")  # a path, though not made yet
    assert cfg.corpus.source == str(tmp_path / "data/corpus.jsonl")  # exists here
    assert cfg.prepare.tokenizer == "bert-base-uncased"  # hub names stay as they are
    assert cfg.embed.encoder == "sentence-transformers/all-MiniLM-L6-v2"
    assert cfg.evaluate.external == [str(tmp_path.parent / "wiki.tokens")]
    assert cfg.evaluate.downstream.data_dir == str(tmp_path / "glue")
    assert load_config(write(tmp_path, "corpus: {source: s3://bucket/corpus}\n")).corpus.source == "s3://bucket/corpus"
    assert load_config(None).corpus.source == "builtin:wiki-offline"
