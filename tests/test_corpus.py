import gzip
import json
from itertools import islice

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataio.corpus import BUILTIN_WIKI, read_documents


def test_jsonl_gz_parquet_and_txt_folder(tmp_path):
    rows = [{"id": "a", "text": "first doc"}, {"id": "b", "text": "   "}, {"id": "c", "text": "third"}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "x.txt").write_text("hello")
    (tmp_path / "txt" / "y.txt").write_text("world")
    for name in ("c.jsonl", "c.jsonl.gz", "c.parquet"):
        docs = list(read_documents(str(tmp_path / name)))
        assert [(d.doc_id, d.text) for d in docs] == [("a", "first doc"), ("c", "third")]  # empty text skipped
    assert [d.doc_id for d in read_documents(str(tmp_path / "txt"))] == ["x", "y"]
    (tmp_path / "abstracts.txt").write_text("First abstract.\n\n  Second abstract. \n")
    lines = list(read_documents(str(tmp_path / "abstracts.txt"), line_documents=True))
    assert [(d.doc_id, d.text) for d in lines] == [
        ("abstracts:1", "First abstract."),
        ("abstracts:3", "Second abstract."),
    ]


def test_bad_input_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not UTF-8"):
        list(read_documents(str(bad)))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(ValueError, match=r"broken\.jsonl:2: invalid JSON"):
        list(read_documents(str(broken)))
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match=r"nofield\.jsonl:1: no field 'text'"):
        list(read_documents(str(nofield)))
    with pytest.raises(ValueError, match="does not exist"):
        list(read_documents(str(tmp_path / "missing.jsonl")))
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"corrupt\.parquet: not a readable Parquet file"):
        list(read_documents(str(corrupt)))
    latin = tmp_path / "t" / "latin.txt"
    latin.parent.mkdir()
    latin.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=r"latin\.txt: not UTF-8"):
        list(read_documents(str(latin.parent)))


def test_builtin_corpus_is_the_ovos_wiki():
    docs = list(read_documents(BUILTIN_WIKI))
    assert len(docs) == 10033
    assert sum(len(d.text) for d in docs) > 4_800_000  # the lead sections alone (titles and topics are extra)
    assert docs[0].doc_id < docs[-1].doc_id  # sorted by title: a stable order


def test_saved_hugging_face_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"id": [1, 2], "text": ["alpha beta", "gamma"]}).save_to_disk(str(tmp_path / "ds"))
    docs = list(read_documents(str(tmp_path / "ds")))
    assert [(d.doc_id, d.text) for d in docs] == [("1", "alpha beta"), ("2", "gamma")]


def test_a_corpus_on_s3_reads_like_the_local_one(s3, tmp_path):
    """A prefix of JSONL (one gzipped) reads as the same documents as the local folder; a bad line is
    named by object and line; segments planned from per-file counts give the same shards as slicing."""
    from dataio.corpus import corpus_files, count_documents, plan_segments, read_segments

    docs = list(islice(read_documents(BUILTIN_WIKI), 30))
    lines = [json.dumps({"id": d.doc_id, "text": d.text}) + "\n" for d in docs]
    s3.put_object(Bucket="corpus", Key="web/a.jsonl", Body="".join(lines[:12]).encode())
    s3.put_object(Bucket="corpus", Key="web/b.jsonl.gz", Body=gzip.compress("".join(lines[12:]).encode()))
    read = list(read_documents("s3://corpus/web/"))
    assert [(d.doc_id, d.text) for d in read] == [(d.doc_id, d.text) for d in docs]
    files = corpus_files("s3://corpus/web")
    assert files == ["s3://corpus/web/a.jsonl", "s3://corpus/web/b.jsonl.gz"]
    fields = {"text_field": "text", "id_field": "id", "line_documents": False}
    shards = plan_segments(
        files, [count_documents(f, **fields) for f in files], max_documents=25, documents_per_shard=7
    )
    assert [[d.doc_id for d in read_segments(s, **fields)] for s in shards] == [
        [d.doc_id for d in docs[i : min(i + 7, 25)]] for i in range(0, 25, 7)
    ]
    s3.put_object(Bucket="corpus", Key="bad/x.jsonl", Body=b'{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(ValueError, match=r"s3://corpus/bad/x.jsonl:2: invalid JSON"):
        list(read_documents("s3://corpus/bad/x.jsonl"))
    with pytest.raises(ValueError, match="corpus 's3://corpus/missing.jsonl' does not exist"):
        list(read_documents("s3://corpus/missing.jsonl"))


def test_tsv_rows_are_documents_of_their_text_column(tmp_path):
    """GLUE's layout: a header, then one row a document (its `sentence` column unless `text_field` names one)."""
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nit 's a charming journey .\t1\n\t0\na dull film\t0\n")
    docs = list(read_documents(str(tmp_path / "dev.tsv")))
    assert [(d.doc_id, d.text) for d in docs] == [("dev:2", "it 's a charming journey ."), ("dev:4", "a dull film")]
    (tmp_path / "other.tsv").write_text("text\tsentence\nfirst\tsecond\n")
    assert [d.text for d in read_documents(str(tmp_path / "other.tsv"))] == ["first"]
    (tmp_path / "bad.tsv").write_text("x\ty\n1\t2\n")
    with pytest.raises(ValueError, match=r"bad.tsv: no 'text' \(or 'sentence'\) column in its header \['x', 'y'\]"):
        list(read_documents(str(tmp_path / "bad.tsv")))


def test_lines_longer_than_a_block_and_every_boundary_read_as_split_does(tmp_path):
    """The streamed line reader against bytes.split on the whole file: a 3 MiB line spanning blocks, a
    newline at a block's last byte and its first, empty lines, no final newline."""
    import gzip

    from dataio.corpus import _lines

    block = 1 << 20
    data = b"a" * (3 * block + 17) + b"\nshort\n\n" + b"b" * (block - 9 - 3 * block % block) + b"\n"
    data += b"c" * (block - 1) + b"\n" + b"\n" + b"tail without newline"
    path = tmp_path / "long.txt.gz"
    path.write_bytes(gzip.compress(data))
    assert list(_lines(str(path))) == data.split(b"\n")
    ends = tmp_path / "ends.txt"
    ends.write_bytes(b"x" * (block - 1) + b"\n" + b"y" * block + b"\n")
    assert list(_lines(str(ends))) == [b"x" * (block - 1), b"y" * block]  # no empty last line
