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
