"""Downstream tasks for evaluating a pretrained checkpoint: GLUE-style sets and OHSUMED.

Each reader finds its files by name anywhere under a data folder (so `../shared/data`, a folder of
GLUE downloads, or a folder holding just the files all work) and returns (train, dev) lists of
Example. The folder is a local path or an `s3://`/`gs://` URI, read through dataio/uri.py by the
process that loads the task (a fine-tuning task on a worker node reads the files itself).
Where a set has no public dev split we say here what stands in for it:
- MRPC: the MSR paraphrase test file (1,725 labelled pairs) is the evaluation set;
- RTE: the RTE-3 test pairs (800) are the evaluation set, RTE-1/2/3 dev and RTE-1/2 test train;
- OHSUMED: its own training/ and test/ folders (23 disease classes, one abstract per file).
"""

from __future__ import annotations

import csv
import io
import socket
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dataio import uri as U


@dataclass(frozen=True)
class Example:
    text: str
    pair: str | None  # second sentence of a pair task, else None
    label: float  # class index, or the similarity score for regression


@dataclass(frozen=True)
class Task:
    name: str
    train: list[Example]
    dev: list[Example]
    num_labels: int  # 1 = regression (STS-B)
    score: str  # the metric the task's headline number is (GLUE's convention)


def find(root: str, name: str) -> str:
    """The file called `name` directly in `root`, else the first (in sorted order) anywhere under it."""
    direct = U.join(root, name)
    if U.is_file(direct):
        return direct
    found = U.list_files(root, name, recursive=True)
    if not found:
        raise ValueError(f"downstream data: no file named {name!r} under {root}")
    return found[0]


def _text(path: str) -> io.StringIO:
    # newline="" keeps line ends as they are, as the csv module asks of its files.
    return io.StringIO(U.read_bytes(path).decode("utf-8-sig"), newline="")


def _tsv(path: str, text: str, label: str) -> list[Example]:
    rows = list(csv.DictReader(_text(path), delimiter="\t", quoting=csv.QUOTE_NONE))
    if rows and (text not in rows[0] or label not in rows[0]):
        raise ValueError(f"{path}: expected columns {text!r} and {label!r}, found {list(rows[0])}")
    return [Example(r[text].strip(), None, float(r[label])) for r in rows]


def sst2(root: str) -> Task:
    return Task(
        "sst2",
        _tsv(find(root, "sst2_train_full.tsv"), "sentence", "label"),
        _tsv(find(root, "sst2_dev.tsv"), "sentence", "label"),
        2,
        "accuracy",
    )


def cola(root: str) -> Task:
    return Task(
        "cola",
        _tsv(find(root, "cola_train.tsv"), "x", "y"),
        _tsv(find(root, "cola_dev_in_domain.tsv"), "x", "y"),
        2,
        "mcc",
    )


def _msr(path: str) -> list[Example]:
    rows = list(csv.reader(_text(path), delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    bad = [i + 2 for i, r in enumerate(rows) if len(r) != 5]
    if bad:
        raise ValueError(
            f"{path}:{bad[0]}: expected 5 tab-separated fields (Quality, #1 ID, #2 ID, #1 String, #2 String)"
        )
    return [Example(r[3], r[4], float(r[0])) for r in rows]


def mrpc(root: str) -> Task:
    return Task(
        "mrpc",
        _msr(find(root, "mrpc_msr_paraphrase_train.txt")),
        _msr(find(root, "mrpc_msr_paraphrase_test.txt")),
        2,
        "f1_accuracy",
    )


def _sts(path: str) -> list[Example]:
    out = []
    for n, line in enumerate(U.read_text(path).splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 7:
            raise ValueError(f"{path}:{n}: expected >= 7 tab-separated fields (genre, file, year, id, score, s1, s2)")
        out.append(Example(fields[5], fields[6], float(fields[4])))
    return out


def stsb(root: str) -> Task:
    return Task("stsb", _sts(find(root, "stsb_train.tsv")), _sts(find(root, "stsb_dev.tsv")), 1, "pearson_spearman")


def _rte_pairs(blob: bytes, where: str) -> list[Example]:
    out = []
    for pair in ET.fromstring(blob).iter("pair"):
        value = pair.get("entailment") or pair.get("value")
        if value not in ("YES", "NO", "TRUE", "FALSE"):
            raise ValueError(f"{where}: pair {pair.get('id')} has no entailment label")
        out.append(Example(pair.findtext("t").strip(), pair.findtext("h").strip(), float(value in ("YES", "TRUE"))))
    return out


def rte(root: str) -> Task:
    path = find(root, "nltk_rte.zip")
    with zipfile.ZipFile(io.BytesIO(U.read_bytes(path))) as z:
        sets = {Path(n).stem: _rte_pairs(z.read(n), f"{path}:{n}") for n in sorted(z.namelist()) if n.endswith(".xml")}
    dev = sets.pop("rte3_test")
    return Task("rte", [e for name in sorted(sets) for e in sets[name]], dev, 2, "accuracy")


def ohsumed(root: str) -> Task:
    path = find(root, "ohsumed_single_23.tar.gz")
    split: dict[str, list[tuple[str, str]]] = {"training": [], "test": []}
    with tarfile.open(fileobj=io.BytesIO(U.read_bytes(path))) as tar:
        for member in tar:
            parts = Path(member.name).parts  # ohsumed_single_23/<split>/<class>/<file>
            if member.isfile() and len(parts) == 4 and parts[1] in split:
                text = io.TextIOWrapper(tar.extractfile(member), encoding="utf-8").read()
                split[parts[1]].append((parts[2], " ".join(text.split())))
    classes = sorted({c for c, _ in split["training"]})
    index = {c: i for i, c in enumerate(classes)}
    as_examples = [[Example(t, None, float(index[c])) for c, t in sorted(split[s])] for s in ("training", "test")]
    return Task("ohsumed", as_examples[0], as_examples[1], len(classes), "accuracy")


TASKS: dict[str, Callable[[str], Task]] = {
    "sst2": sst2,
    "cola": cola,
    "mrpc": mrpc,
    "stsb": stsb,
    "rte": rte,
    "ohsumed": ohsumed,
}
GLUE = ("sst2", "cola", "mrpc", "stsb", "rte")


def load_task(name: str, data_dir: str | Path) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown downstream task {name!r}; known: {', '.join(TASKS)}")
    root = U.normalize(data_dir)
    if not U.exists(root) or U.is_file(root):
        raise ValueError(
            f"downstream data folder {data_dir} does not exist on {socket.gethostname()} "
            f"(a local folder must be on every node that fine-tunes: use s3:// or gs:// otherwise)"
        )
    task = TASKS[name](root)
    if not task.train or not task.dev:
        raise ValueError(f"downstream task {name!r} under {root}: empty train or evaluation set")
    return task
