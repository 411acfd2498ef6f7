"""Credentials in URIs never reach a log line or a file: the one helper every printer uses."""

from dataio.redact import redact, redact_tree


def test_userinfo_and_secret_parameters_are_masked():
    assert redact("run directory: s3://AKIA123:se/cr+et@bucket/runs/x") == "run directory: s3://***@bucket/runs/x"
    assert redact("https://user:pw@host/p?x=1&secret_key=abc&y=2") == "https://***@host/p?x=1&secret_key=***&y=2"
    assert redact("s3://b/x?access_key=K&secret_key=S&region=us") == "s3://b/x?access_key=***&secret_key=***&region=us"
    assert redact("a s3://K:S@b/x and gs://token@c/y") == "a s3://***@b/x and gs://***@c/y"
    for plain in ("gs://bucket/a@b.txt", "hf:org/name", "/home/me/runs/x", "mail me at a@b.c"):
        assert redact(plain) == plain


def test_whole_configs_are_masked():
    tree = {"corpus": {"source": "s3://K:S@b/c"}, "external": ["https://u:p@h/f", 3], "n": None, "t": ("s3://K:S@b",)}
    assert redact_tree(tree) == {
        "corpus": {"source": "s3://***@b/c"},
        "external": ["https://***@h/f", 3],
        "n": None,
        "t": ("s3://***@b",),
    }


def test_an_unexpected_failure_prints_its_traceback_and_last_line_redacted(tmp_path, monkeypatch, capsys):
    """A training worker's or out-of-memory failure is no ValueError: it too reaches the terminal without
    the credentials of the URI it names."""
    import argparse

    import pytest

    from jobs import pipeline

    class OutOfMemoryError(RuntimeError):
        pass

    def failing_run(*args, **kwargs):
        raise OutOfMemoryError("task died writing s3://AKIA123:s3cret@bucket/runs/x/embed/part-0.parquet")

    monkeypatch.setattr(pipeline, "run_pipeline", failing_run)
    config = tmp_path / "c.yaml"
    config.write_text("name: c\n")
    args = argparse.Namespace(config=str(config), run_dir=str(tmp_path / "run"), force=[])
    with pytest.raises(SystemExit) as exit_info:
        pipeline.execute(args, None)
    err = capsys.readouterr().err
    assert "failing_run" in err and "Traceback" in err  # the fault happened and its traceback is shown
    line = str(exit_info.value.code)
    assert line.startswith("error: OutOfMemoryError: task died writing s3://***@bucket/runs/x/embed/part-0.parquet")
    assert "lower the stage's batch size" in line
    assert "s3cret" not in err + line and "AKIA123" not in err + line


def test_an_error_leaves_a_redacted_block_masked_with_its_type_and_chain():
    """What a Ray Train worker raises is logged by Ray Train before the driver's printers see it."""
    import pytest

    from dataio.redact import errors_redacted

    with pytest.raises(KeyError) as caught, errors_redacted():
        try:
            raise OSError(2, "cannot open s3://K:S@b/x", "s3://K:S@b/x?secret_key=S")
        except OSError as e:
            raise KeyError("s3://b/y?access_key=K&secret_key=S") from e
    assert str(caught.value) == "'s3://b/y?access_key=***&secret_key=***'"
    assert str(caught.value.__cause__) == "[Errno 2] cannot open s3://***@b/x: 's3://***@b/x?secret_key=***'"
