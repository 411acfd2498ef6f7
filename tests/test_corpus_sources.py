"""Your own data: `hf:` sources with a config, split, revision and text column (parsed and
fingerprinted without the hub), and Parquet folders read recursively (Hive partitions too), only the
text and id columns, with a null text an error naming the file and row."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataio.corpus import corpus_files, corpus_snapshot, read_documents
from dataio.hub import HubSource, hub_fingerprint, parse_hub
from jobs.config import CorpusConfig

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_hub_sources_take_a_config_split_revision_and_column():
    assert parse_hub("hf:wikitext") == HubSource(name="wikitext")
    assert parse_hub(f"hf:allenai/c4?config=en&split=validation&revision={COMMIT}&column=text") == HubSource(
        name="allenai/c4", config="en", split="validation", revision=COMMIT, column="text"
    )
    assert parse_hub("hf:allenai/c4?split=train[:1%25]").split == "train[:1%]"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("hf:", "is not a hub dataset name"),
        ("hf:a/b/c", "is not a hub dataset name"),
        ("hf:c4?lang=en", "unknown option 'lang' \\(options are config, split, revision, column\\)"),
        ("hf:c4?config=en&config=fr", "option 'config' is given twice"),
        ("hf:c4?split=", "option 'split' is empty"),
        ("hf:c4?config", "cannot read its options"),
    ],
)
def test_a_malformed_hub_source_is_a_value_error_naming_it(source, message):
    with pytest.raises(ValueError, match=message):
        parse_hub(source)
    with pytest.raises(ValueError, match=message):
        CorpusConfig(source=source)


def test_a_hub_dataset_is_fingerprinted_by_name_config_revision_and_split(monkeypatch):
    base = f"hf:allenai/c4?config=en&split=train&revision={COMMIT}"
    assert corpus_snapshot(base) == {"hub": "allenai/c4", "config": "en", "revision": COMMIT, "split": "train"}
    changed = [
        base.replace("config=en", "config=realnewslike"),
        base.replace("split=train", "split=validation"),
        base.replace(COMMIT, COMMIT[::-1]),
        base.replace("allenai/c4", "allenai/c5"),
    ]
    assert len({str(corpus_snapshot(s)) for s in [base, *changed]}) == 5
    # A branch is resolved to its commit on the hub; with no hub to ask, the error says how to pin one.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="cannot find which commit revision 'main' is on the hub.*revision=<40-hex"):
        hub_fingerprint("hf:allenai/c4?config=en")


def write(path, rows, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, **kwargs)


def test_parquet_folders_are_read_recursively_with_hive_partitions(tmp_path):
    table = pa.table({"lang": ["en", "en", "fr"], "body": ["one", "two", "trois"], "id": ["a", "b", "c"]})
    pq.write_to_dataset(table, tmp_path / "hive", partition_cols=["lang"])
    (tmp_path / "hive" / "_SUCCESS").write_text("")  # what Spark leaves beside the data
    write(tmp_path / "hive" / "_temporary" / "x.parquet", [{"body": "half written", "id": "z"}])
    files = corpus_files(str(tmp_path / "hive"))
    assert [f.split("/hive/")[1].split("/")[0] for f in files] == ["lang=en", "lang=fr"]
    docs = list(read_documents(str(tmp_path / "hive"), text_field="body"))
    assert [(d.doc_id, d.text) for d in docs] == [("a", "one"), ("b", "two"), ("c", "trois")]


def test_parquet_reads_only_the_text_and_id_columns(tmp_path):
    rows = [{"body": f"text {i}", "id": f"d{i}", "extra": "x" * 50 + str(i)} for i in range(5)]
    path = tmp_path / "deep" / "a" / "b" / "part.parquet"
    write(path, rows)
    # Garble the `extra` column's pages: a reader that reads it fails; one that projects never sees them.
    chunk = pq.read_metadata(path).row_group(0).column(2)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))
    with pytest.raises(OSError):
        pq.read_table(path)
    docs = list(read_documents(str(tmp_path / "deep"), text_field="body"))
    assert [(d.doc_id, d.text) for d in docs] == [(f"d{i}", f"text {i}") for i in range(5)]
    with pytest.raises(ValueError, match=r"part\.parquet: no column 'text' \(columns: body, id, extra; set corpus"):
        list(read_documents(str(tmp_path / "deep")))


def test_a_null_text_names_the_file_and_row(tmp_path):
    write(tmp_path / "p" / "k=1" / "x.parquet", [{"text": "fine"}, {"text": "also"}, {"text": None}], row_group_size=1)
    with pytest.raises(ValueError, match=r"k=1/x\.parquet row 2: column 'text' is null"):
        list(read_documents(str(tmp_path / "p")))
