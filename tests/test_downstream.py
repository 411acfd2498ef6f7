"""Downstream evaluation: task readers (synthetic files in each format, and the real ones), metrics,
and fine-tuning that learns a learnable task, deterministically per seed; task files, checkpoints and
results on object storage (a local S3 server on loopback) as well as on a local disk."""

import io
import json
import tarfile
import uuid
import zipfile

import numpy as np
import pytest
import torch

from dataio import uri as U
from dataio.tasks import GLUE, load_task
from jobs.downstream import downstream_tasks, model_names, score_table, write_results
from tests.conftest import shared_file, write_sst2
from training.embed import load_encoder, local_model
from training.finetune import FinetuneConfig, f1_binary, finetune, matthews, subsample
from training.model import ModelConfig, build_model
from training.tokenizer import train_tokenizer

RTE1 = """<?xml version="1.0" encoding="UTF-8"?><entailment-corpus>
<pair id="1" value="TRUE" task="CD"><t>A dog runs.</t><h>An animal runs.</h></pair>
<pair id="2" value="FALSE" task="CD"><t>A cat sleeps.</t><h>A cat runs.</h></pair></entailment-corpus>"""
RTE3 = """<?xml version="1.0" encoding="UTF-8"?><entailment-corpus>
<pair id="9" entailment="YES" task="IE"><t>Rome is in Italy.</t><h>Rome is Italian.</h></pair></entailment-corpus>"""


def write_task_files(root):
    (root / "sst2_train_full.tsv").write_text("sentence\tlabel\na fine film \t1\na dull mess \t0\n")
    (root / "sst2_dev.tsv").write_text("sentence\tlabel\nfine \t1\n")
    (root / "cola_train.tsv").write_text("x\ty\nthe dog barked\t1\n")
    (root / "cola_dev_in_domain.tsv").write_text("x\ty\ndog the barked\t0\n")
    msr = '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said "yes".\tHe agreed.\n'
    (root / "mrpc_msr_paraphrase_train.txt").write_text(msr)
    (root / "mrpc_msr_paraphrase_test.txt").write_text(msr)
    (root / "stsb_train.tsv").write_text("main-captions\tMSRvid\t2012test\t0001\t4.5\tA man runs.\tA man is running.\n")
    (root / "stsb_dev.tsv").write_text("main-news\theadlines\t2016\t0002\t0\tA.\tB.\tsrc1\tsrc2\n")
    with zipfile.ZipFile(root / "nltk_rte.zip", "w") as z:
        z.writestr("rte/rte1_dev.xml", RTE1)
        z.writestr("rte/rte3_test.xml", RTE3)
    with tarfile.open(root / "ohsumed_single_23.tar.gz", "w:gz") as tar:
        for split, cls, name, text in [
            ("training", "C01", "1", "Fever.\n Infection."),
            ("training", "C02", "2", "Virus."),
            ("test", "C02", "3", "Viral load."),
        ]:
            blob = text.encode()
            info = tarfile.TarInfo(f"ohsumed_single_23/{split}/{cls}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def test_task_readers_parse_every_format(tmp_path):
    (tmp_path / "nested").mkdir()
    write_task_files(tmp_path / "nested")  # files are found by name anywhere under the data folder
    sst2 = load_task("sst2", tmp_path)
    assert [(e.text, e.label) for e in sst2.train] == [("a fine film", 1.0), ("a dull mess", 0.0)]
    assert load_task("cola", tmp_path).dev[0].label == 0.0
    mrpc = load_task("mrpc", tmp_path)
    assert (mrpc.train[0].text, mrpc.train[0].pair, mrpc.train[0].label) == ('He said "yes".', "He agreed.", 1.0)
    stsb = load_task("stsb", tmp_path)
    assert stsb.num_labels == 1 and (stsb.train[0].pair, stsb.train[0].label, stsb.dev[0].text) == (
        "A man is running.",
        4.5,
        "A.",
    )
    rte = load_task("rte", tmp_path)
    assert (
        [e.label for e in rte.train] == [1.0, 0.0] and rte.dev[0].pair == "Rome is Italian." and rte.dev[0].label == 1.0
    )
    ohsumed = load_task("ohsumed", tmp_path)
    assert ohsumed.num_labels == 2 and ohsumed.train[0].text == "Fever. Infection." and ohsumed.dev[0].label == 1.0


def test_task_errors_name_what_and_where(tmp_path):
    with pytest.raises(ValueError, match="unknown downstream task 'sst3'"):
        load_task("sst3", tmp_path)
    with pytest.raises(ValueError, match="no file named 'cola_train.tsv'"):
        load_task("cola", tmp_path)
    write_task_files(tmp_path)
    (tmp_path / "mrpc_msr_paraphrase_test.txt").write_text("Quality\t#1 ID\n1\t2\tonly four\tfields\n")
    with pytest.raises(ValueError, match=r"mrpc_msr_paraphrase_test.txt:2: expected 5"):
        load_task("mrpc", tmp_path)
    (tmp_path / "sst2_dev.tsv").write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(ValueError, match="sst2_dev.tsv: expected columns 'sentence'"):
        load_task("sst2", tmp_path)


def test_real_task_files():
    root = shared_file("eval/glue").parents[1]
    sizes = {name: (len(t.train), len(t.dev)) for name in (*GLUE, "ohsumed") for t in [load_task(name, root)]}
    assert sizes == {
        "sst2": (67349, 872),
        "cola": (8551, 527),
        "mrpc": (4076, 1725),
        "stsb": (5749, 1500),
        "rte": (3367, 800),
        "ohsumed": (3357, 4043),
    }
    assert load_task("ohsumed", root).num_labels == 23


def test_metrics_by_hand():
    y, p = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])  # tp 2, tn 1, fp 1, fn 1
    assert matthews(y, p) == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))
    assert f1_binary(y, p) == pytest.approx(2 / 3)
    assert matthews(y, np.ones(5)) == 0.0  # a constant predictor has no correlation
    rows = [
        {"model": m, "task": t, "seed": s, "score": v}
        for m, t, s, v in [("a", "x", 0, 0.5), ("a", "x", 1, 0.7), ("a", "y", 0, 0.1), ("a", "y", 1, 0.3)]
    ]
    # Two seeds: sample std 14.14, t(0.975, 1) = 12.706, half-width 12.706 * 14.14 / sqrt(2) = 127.1.
    table = score_table(rows).splitlines()
    assert table[0] == "| model (mean ± t 95% CI over seeds) | x | y | average |"
    assert table[-1] == "| a | 60.0 ± 127.1 | 20.0 ± 127.1 | 40.0 ± 127.1 |"
    one_seed = [r for r in rows if r["seed"] == 0]
    assert score_table(one_seed).splitlines()[-1] == "| a | 50.0 | 10.0 | 30.0 |"
    assert subsample(list(range(100)), 10) == subsample(list(range(100)), 10) != subsample(list(range(100)), 11)[:10]


def test_small_finetuning_tasks_share_a_gpu(tmp_path):
    cfg = FinetuneConfig(tasks=["sst2"], data_dir=str(write_sst2(tmp_path)), seeds=[0, 1], gpu_fraction=0.25)
    for gpus, share in ((1.0, 0.25), (0.0, 0.0)):  # a share of a GPU only where GPUs are used
        named = downstream_tasks({"m": "model"}, cfg, kind="bert", gpus_per_task=gpus)
        assert [t.resources.gpus for _, t in named] == [share, share]
    with pytest.raises(ValueError, match=r"downstream.gpu_fraction must be in \(0, 1\], got 0"):
        FinetuneConfig(gpu_fraction=0)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_finetuning_learns_a_learnable_task(tmp_path, kind):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]

    def example(label):
        return " ".join(rng.choice(words, 5)) + (" great" if label else " awful") + " " + " ".join(rng.choice(words, 3))

    glue = tmp_path / "glue"
    glue.mkdir()
    for name, n in [("sst2_train_full.tsv", 256), ("sst2_dev.tsv", 64)]:
        labels = rng.integers(0, 2, n)
        (glue / name).write_text("sentence\tlabel\n" + "".join(f"{example(y)}\t{y}\n" for y in labels))
    model_dir = tmp_path / "model"
    tok = train_tokenizer(words + ["great awful"] * 5, kind=kind, vocab_size=120, out_dir=model_dir)
    torch.manual_seed(0)
    build_model(
        ModelConfig(kind=kind, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seq_len=32),
        vocab_size=len(tok),
        pad_id=tok.pad_token_id,
        eos_id=tok.eos_token_id,
    ).save_pretrained(model_dir)
    cfg = FinetuneConfig(tasks=["sst2"], data_dir=str(glue), epochs=8, learning_rate=1e-3, batch_size=16)
    task = load_task("sst2", glue)
    first = finetune(str(model_dir), task, cfg, seed=1, kind=kind)
    assert first["accuracy"] > 0.9 and first["eval_examples"] == 64 and first["train_examples"] == 256
    again = finetune(str(model_dir), task, cfg, seed=1, kind=kind)
    assert again["accuracy"] == first["accuracy"] and again["f1"] == first["f1"]
    json.dumps(first)  # plain numbers, ready for the results file


@pytest.fixture
def s3(monkeypatch):
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # A bucket per server: dataio.uri caches a filesystem per bucket, with the endpoint it was made with.
    bucket = f"downstream-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
    yield f"s3://{bucket}"
    server.stop()


def test_tasks_read_from_object_storage_as_from_a_local_folder(s3, tmp_path):
    (tmp_path / "glue" / "nested").mkdir(parents=True)
    write_task_files(tmp_path / "glue" / "nested")
    U.upload_dir(tmp_path / "glue", f"{s3}/data/glue")
    for name in ("sst2", "cola", "mrpc", "stsb", "rte", "ohsumed"):
        assert load_task(name, f"{s3}/data") == load_task(name, tmp_path)
    U.write_text(f"{s3}/data/none/README", "no task files here")
    with pytest.raises(ValueError, match=f"no file named 'cola_train.tsv' under {s3}/data/none"):
        load_task("cola", f"{s3}/data/none")
    with pytest.raises(ValueError, match=f"downstream data folder {s3}/missing does not exist on .*use s3:// or gs://"):
        load_task("sst2", f"{s3}/missing")
    U.write_text(f"{s3}/data/glue/nested/sst2_dev.tsv", "text\tlabel\nfine\t1\n")
    with pytest.raises(ValueError, match=f"{s3}/data/glue/nested/sst2_dev.tsv: expected columns 'sentence'"):
        load_task("sst2", f"{s3}/data")


def test_finetuning_a_checkpoint_on_object_storage_and_results_written_there(s3, tmp_path):
    glue, model_dir = tmp_path / "glue", tmp_path / "model"
    glue.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [("sst2_train_full.tsv", 64), ("sst2_dev.tsv", 16)]:
        (glue / name).write_text(
            "sentence\tlabel\n"
            + "".join(f"word{i % 7} word{i % 3}\t{y}\n" for i, y in enumerate(rng.integers(0, 2, n)))
        )
    tok = train_tokenizer([f"word{i}" for i in range(7)] * 5, kind="bert", vocab_size=80, out_dir=model_dir)
    torch.manual_seed(0)
    build_model(
        ModelConfig(kind="bert", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seq_len=32),
        vocab_size=len(tok),
        pad_id=tok.pad_token_id,
    ).save_pretrained(model_dir)
    U.upload_dir(model_dir, f"{s3}/runs/x/train/model")
    U.upload_dir(glue, f"{s3}/glue")
    encoders = []
    for location in (f"{s3}/runs/x/train/model", str(model_dir)):  # as the embed actor loads it, and locally
        torch.manual_seed(0)  # the pooler, absent from an MLM checkpoint, is initialised at random
        encoders.append(load_encoder(location, torch.device("cpu")).state_dict())
    assert encoders[0].keys() == encoders[1].keys() and all(
        torch.equal(v, encoders[1][k]) for k, v in encoders[0].items()
    )
    assert local_model("bert-base-uncased") == "bert-base-uncased"  # a hub name is passed on
    with pytest.raises(ValueError, match=f"{tmp_path}/gone does not exist on this node"):
        local_model(str(tmp_path / "gone"))
    cfg = FinetuneConfig(tasks=["sst2"], data_dir=f"{s3}/glue", epochs=1, batch_size=16)
    remote = finetune(f"{s3}/runs/x/train/model", load_task("sst2", cfg.data_dir), cfg, seed=0, kind="bert")
    local = finetune(str(model_dir), load_task("sst2", glue), cfg, seed=0, kind="bert")
    assert remote["device"] == "cpu"
    assert {k: v for k, v in remote.items() if k != "seconds"} == {k: v for k, v in local.items() if k != "seconds"}
    rows = [{"model": "train", **remote}]
    table = write_results(rows, f"{s3}/runs/x/evaluate")
    assert U.read_text(f"{s3}/runs/x/evaluate/downstream.md") == table + "\n"
    assert [json.loads(line) for line in U.read_text(f"{s3}/runs/x/evaluate/downstream.jsonl").splitlines()] == rows


def test_model_names_from_paths_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert model_names(["s3://b/runs/x/train/model", "warm=runs/x/warmstart/model", "model"]) == {
        "train": "s3://b/runs/x/train/model",
        "warm": str(tmp_path / "runs/x/warmstart/model"),
        "model": str(tmp_path / "model"),
    }
