import dataclasses
from pathlib import Path

import pytest

from dataio.configfile import result_settings
from experiments.config import load_experiment
from jobs.config import PipelineConfig, load_config
from jobs.pipeline import DEFAULT_CONFIG

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


# webpool.yaml configures experiments.webpool, not a pipeline: tests/test_webpool.py loads it.
@pytest.mark.parametrize(
    "path",
    sorted(set(CONFIGS.glob("*.yaml")) - set(CONFIGS.glob("experiment-*.yaml")) - {CONFIGS / "webpool.yaml"}),
    ids=lambda p: p.name,
)
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


def test_use_gpu_takes_yaml_booleans_and_auto(tmp_path):
    cfg = load_config(write(tmp_path, "embed: {use_gpu: true}\ntrain: {use_gpu: false}\nwarmstart: {use_gpu: auto}\n"))
    assert (cfg.embed.use_gpu, cfg.train.use_gpu, cfg.warmstart.use_gpu) == (True, False, "auto")


def test_choices_are_checked_in_sections_built_in_code():
    cfg = PipelineConfig()
    with pytest.raises(
        ValueError,
        match=r"select\.strategy must be one of ingenious, greedi, semdedup, d4, perplexity, dsir, classifier, "
        r"got .best.",
    ):
        dataclasses.replace(cfg.select, strategy="best")
    with pytest.raises(ValueError, match=r"use_gpu must be true, false or auto, got 'yes'"):
        dataclasses.replace(cfg.train, use_gpu="yes")


def test_the_warm_start_has_no_subset_setting(tmp_path):
    with pytest.raises(ValueError, match=r"c\.yaml: unknown key 'warmstart\.subset'"):
        load_config(write(tmp_path, "warmstart: {subset: full}\n"))


def test_sections_keep_defaults_for_unset_keys(tmp_path):
    cfg = load_config(write(tmp_path, "warmstart: {steps: 5}\nselect: {knn_k: 7}\n"))
    assert cfg.warmstart.steps == 5 and cfg.warmstart.subset == "full"
    assert cfg.select.knn_k == 7 and cfg.select.fraction == 0.25


def test_relative_paths_are_fixed_where_the_user_ran_the_command(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.jsonl").write_text("")
    text = (
        "model: {init_from: runs/general/train/model}\ncorpus: {source: data/corpus.jsonl}\n"
        "prepare: {tokenizer: bert-base-uncased}\nembed: {encoder: sentence-transformers/all-MiniLM-L6-v2}\n"
        "evaluate: {external: [../wiki.tokens], downstream: {tasks: [sst2], data_dir: ./glue}}\n"
    )
    cfg = load_config(write(tmp_path, text), base=tmp_path)
    assert cfg.model.init_from == str(tmp_path / "runs/general/train/model")  # a path, though not made yet
    assert cfg.corpus.source == str(tmp_path / "data/corpus.jsonl")  # exists here
    assert cfg.prepare.tokenizer == "bert-base-uncased"  # hub names stay as they are
    assert cfg.embed.encoder == "sentence-transformers/all-MiniLM-L6-v2"
    assert cfg.evaluate.external == [str(tmp_path.parent / "wiki.tokens")]
    assert cfg.evaluate.downstream.data_dir == str(tmp_path / "glue")
    assert load_config(write(tmp_path, "corpus: {source: s3://bucket/corpus}\n")).corpus.source == "s3://bucket/corpus"
    assert load_config(None).corpus.source == "builtin:wiki-offline"


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: {seed: -1}\n", r"train\.seed must be >= 0, got -1"),  # was an OverflowError deep in NumPy
        ("warmstart: {seed: -3}\n", r"warmstart\.seed must be >= 0"),
        ("select: {seed: -1}\n", r"select\.seed must be >= 0"),
        ("evaluate: {seed: -1}\n", r"evaluate\.seed must be >= 0"),
        ("evaluate: {downstream: {seeds: [0, -1]}}\n", r"downstream\.seeds must be >= 0"),
        ("train: {learning_rate: -0.001}\n", r"train\.learning_rate must be a finite number > 0, got -0\.001"),
        ("train: {learning_rate: 0}\n", r"train\.learning_rate must be a finite number > 0"),
        ("warmstart: {learning_rate: .nan}\n", r"warmstart\.learning_rate must be a finite number > 0, got nan"),
        ("train: {max_grad_norm: 0}\n", r"train\.weight_decay must be finite and >= 0 .* max_grad_norm finite and > 0"),
        ("train: {warmup_steps: -1}\n", r"train\.warmup_steps must be >= 0"),
        ("train: {cpus_per_worker: 0}\n", r"train\.cpus_per_worker must be >= 1"),
        ("select: {knn_nprobe: 0}\n", r"select\.knn_nprobe must be >= 1, got 0"),
        ("select: {merge_nprobe: 0}\n", r"select\.merge_nprobe must be >= 1, got 0"),
        ("select: {merge_max_candidates: 0}\n", r"select\.merge_max_candidates must be >= 1, got 0"),
        (
            "select: {merge_objective: all_pionts}\n",
            r"'select\.merge_objective' must be one of partitions, all_points, got 'all_pionts'",
        ),
        ("embed: {pooling: first}\n", r"'embed\.pooling' must be one of auto, mean, last, got 'first'"),
        (
            "train: {subset: all}\n",
            r"'train\.subset' must be one of full, ingenious, greedi, random, semdedup, d4, perplexity, dsir, "
            r"classifier, file, got 'all'",
        ),
        ("train: {use_gpu: 'true'}\n", r"'train\.use_gpu' must be bool or one of auto, got 'true'"),
        ("embed: {cpus_per_actor: 0}\n", r"embed\.cpus_per_actor must be > 0, got 0"),
        ("select: {kmeans_sample: 0}\n", r"select\.kmeans_sample must be >= 1"),
        ("select: {max_partition_factor: .nan}\n", r"max_partition_factor >= 1"),
        ("select: {memory_per_task_gb: 0}\n", r"select\.memory_per_task_gb must be > 0 or null"),
        ("prepare: {num_cpus_per_task: 0}\n", r"prepare\.tokenizer_train_documents and prepare\.num_cpus_per_task"),
        ("evaluate: {batch_size: 0}\n", r"evaluate\.batch_size"),
        ("evaluate: {downstream: {learning_rate: -1.0}}\n", r"downstream\.learning_rate must be finite and > 0"),
        ("model: {num_heads: 0}\n", r"model\.hidden_size, num_layers, num_heads and intermediate_size must be >= 1"),
        ("model: {dropout: 1.0}\n", r"model\.dropout must be in \[0, 1\)"),
        ("ray: {num_cpus: 0}\n", r"ray\.num_cpus must be >= 1"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ValueError, match=message) as err:
        load_config(write(tmp_path, text))
    assert "c.yaml" in str(err.value)


def test_duplicate_keys_name_key_file_and_line(tmp_path):
    # PyYAML keeps the last of two equal keys without a word.
    with pytest.raises(ValueError, match=r"c\.yaml, line 3: duplicate key 'fraction' \(first on line 2\)"):
        load_config(write(tmp_path, "select:\n  fraction: 0.1\n  fraction: 0.5\n"))
    with pytest.raises(ValueError, match=r"c\.yaml, line 2: duplicate key 'train' \(first on line 1\)"):
        load_config(write(tmp_path, "train: {steps: 5}\ntrain: {steps: 6}\n"))
    # A merge key's values may be overridden: that is what merges are for.
    cfg = load_config(write(tmp_path, "train: {<<: {steps: 5, seed: 1}, steps: 6}\n"))
    assert (cfg.train.steps, cfg.train.seed) == (6, 1)


@pytest.mark.parametrize("name", ["../../x", "a/b", "/abs", "..", ".hidden", "", "a\\b", "run name"])
def test_run_names_that_are_not_one_plain_folder_name_are_rejected(tmp_path, name):
    with pytest.raises(ValueError, match=r"c\.yaml: name .* is not a plain name"):
        load_config(write(tmp_path, f"name: {name!r}\n"))
    assert load_config(write(tmp_path, "name: bert-base_v1.2\n")).name == "bert-base_v1.2"


def test_stage_hashes_of_the_shipped_default_config_stay_those_of_earlier_runs():
    """Settings added later (SelectConfig.ADDED) stay out of the hash at their default, so run directories
    made before them are still skipped; a non-default value does change the select hash."""
    from jobs.pipeline import stage_hashes

    cfg = load_config(DEFAULT_CONFIG)
    assert stage_hashes(cfg) == {
        "prepare": "56930aab5e674583",
        "warmstart": "a6dffb27f85abf5e",
        "embed": "2b38a90cdbd4eeab",
        "select": "1382e5566854a21b",
        "train": "1ff48ce76b08e74d",
        "evaluate": "0bdf24444bc21572",
    }
    tempered = dataclasses.replace(cfg, select=dataclasses.replace(cfg.select, temperature=0.5))
    assert stage_hashes(tempered)["select"] != "1382e5566854a21b"
    assert result_settings(tempered.select)["temperature"] == 0.5 and "temperature" not in result_settings(cfg.select)
