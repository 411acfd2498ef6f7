"""`ingenious export` on a finished tiny run, locally and with the run directory on S3 (moto): each
draw's exported token ids are the trainer's (its own reader and schedule), a rerun redoes nothing
finished, an interrupted export redoes only the files it lacks, and --force redoes them all."""

import dataclasses
import json

import pyarrow.parquet as pq
import pytest

from dataio import uri as U
from dataio.contracts import ExportOutputs, PrepareOutputs
from dataio.sequences import ParquetRows
from jobs.cli import main
from jobs.config import load_config
from jobs.export import run_export
from jobs.pipeline import run_pipeline
from jobs.stages.export import ExportConfig
from tests.conftest import write_corpus
from tests.test_storage import put_corpus
from training.selection_io import subset_schedule

pytestmark = pytest.mark.integration
CONFIG = """
name: export
model: {{kind: bert, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 64}}
corpus: {{source: {corpus}}}
prepare: {{vocab_size: 600, documents_per_shard: 40, heldout_fraction: 0.1}}
warmstart: {{steps: 2, global_batch_size: 8, warmup_steps: 1, checkpoint_every: 2}}
embed: {{layer: -1, batch_size: 32, num_actors: 1}}
select: {{fraction: 0.25, knn_k: 5, num_partitions: 2}}
train: {{steps: 6, global_batch_size: 8, warmup_steps: 1, redraw_every: 2}}
"""
UPSTREAM = ["prepare", "warmstart", "embed", "select"]


def finished_run(tmp_path, corpus: str, run_dir: str):
    cfg_file = tmp_path / "export.yaml"
    cfg_file.write_text(CONFIG.format(corpus=corpus))
    cfg = load_config(cfg_file)
    run_pipeline(cfg, run_dir, only=UPSTREAM)
    return cfg, cfg_file


def exported(folder: str, draws: int) -> list[dict[int, dict]]:
    """Per draw: sequence_id -> its exported row (Parquet)."""
    out = []
    for d in range(draws):
        files = U.list_files(U.join(folder, ExportOutputs.draw(d)), "part-*.parquet")
        rows = [r for f in files for r in U.read_parquet(f).to_pylist()]
        assert len({r["sequence_id"] for r in rows}) == len(rows)
        out.append({r["sequence_id"]: r for r in rows})
    return out


def assert_round_trip(cfg, run_dir: str, folder: str) -> None:
    """Every step's batch, as the trainer builds it (subset_schedule and ParquetRows, its reader), is in
    its draw's export with the same token ids; each draw's export is exactly the draw."""
    pool = ParquetRows(U.join(run_dir, "prepare", PrepareOutputs.SEQUENCES))
    schedule = subset_schedule(cfg.train, pool.ids, fraction=cfg.select.fraction, select_dir=U.join(run_dir, "select"))
    draws = exported(folder, 3)
    for d, rows in enumerate(draws):
        assert sorted(rows) == sorted(pool.ids[schedule.draw_rows(d)].tolist())
        assert {r["draw"] for r in rows.values()} == {d}
    for step in range(cfg.train.steps):
        batch = schedule.batch_rows(step)
        pool.prefetch(batch)
        for row in batch:
            got = draws[schedule.draw_index(step)][int(pool.ids[row])]
            assert got["input_ids"] == pool.get(int(row)).tolist()
            assert got["text"] and got["doc_id"] and got["chunk"] >= 0


def test_export_round_trips_resumes_and_loads_in_datasets(ray_cluster, tmp_path):
    run_dir = str(tmp_path / "run")
    cfg, cfg_file = finished_run(tmp_path, str(write_corpus(tmp_path / "wiki.jsonl", 160)), run_dir)
    result = run_export(cfg, run_dir, ExportConfig())
    folder = U.join(run_dir, "export", "parquet")
    assert result["status"] == "ran" and result["folder"] == folder and result["summary"]["draws"] == 3
    assert_round_trip(cfg, run_dir, folder)
    assert (tmp_path / "run/export/parquet/_SUCCESS").exists()

    # Finished: a rerun writes nothing. Interrupted (a file and the marker lost): only that file again.
    files = sorted((tmp_path / "run/export/parquet").rglob("part-*.parquet"))
    before = {f: f.stat().st_mtime_ns for f in files}
    assert run_export(cfg, run_dir, ExportConfig())["status"] == "skipped"
    files[1].unlink()
    (tmp_path / "run/export/parquet/_SUCCESS").unlink()
    again = run_export(cfg, run_dir, ExportConfig())
    assert again["status"] == "ran" and again["summary"]["files_written_now"] == 1
    assert all(f.stat().st_mtime_ns == t for f, t in before.items() if f != files[1])
    assert_round_trip(cfg, run_dir, folder)
    forced = run_export(cfg, run_dir, ExportConfig(), force=True)
    assert forced["summary"]["files_written_now"] == forced["summary"]["files"] == len(files)

    # JSON lines through the command, the same rows as the Parquet export.
    main(["export", "--config", str(cfg_file), "--run-dir", run_dir, "--format", "jsonl"])
    for part in files:
        twin = tmp_path / "run/export/jsonl" / part.parent.name / part.name.replace(".parquet", ".jsonl")
        lines = [json.loads(line) for line in twin.read_text().splitlines()]
        assert lines == pq.read_table(part).to_pylist()

    # A Hugging Face datasets loader reads a draw as the README says.
    from datasets import load_dataset

    ds = load_dataset(
        "parquet", data_files=f"{folder}/draw-00000/*.parquet", split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds.num_rows == result["summary"]["rows_per_draw"][0] and "input_ids" in ds.column_names

    # A fixed subset (here `full`) is one draw.
    full = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, subset="full", redraw_every=None))
    whole = run_export(full, run_dir, ExportConfig(out=str(tmp_path / "full")))
    assert whole["summary"]["draws"] == 1
    assert whole["summary"]["rows_per_draw"] == [len(ParquetRows(U.join(run_dir, "prepare", PrepareOutputs.SEQUENCES)))]


def test_export_on_s3_round_trips(ray_cluster, s3, tmp_path):
    run_dir = "s3://runs/exp"
    cfg, _ = finished_run(tmp_path, put_corpus(s3, 160), run_dir)
    result = run_export(cfg, run_dir, ExportConfig())
    assert result["status"] == "ran" and result["folder"] == "s3://runs/exp/export/parquet"
    assert_round_trip(cfg, run_dir, result["folder"])
    assert run_export(cfg, run_dir, ExportConfig())["status"] == "skipped"
    jsonl = run_export(cfg, run_dir, ExportConfig(format="jsonl", out="s3://corpus/exported"))
    assert U.exists("s3://corpus/exported/_SUCCESS")
    assert jsonl["summary"]["rows_per_draw"] == result["summary"]["rows_per_draw"]
