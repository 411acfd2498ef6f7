"""summary.json: an experiment's numbers as data, computed by hand here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from experiments.layout import MAIN, Gate
from reporting.summary import paired_differences, summarise


def record(arm, seed, heldout, group=MAIN):
    return {"run": SimpleNamespace(arm=arm, seed=seed, group=group), "loss": {"final/heldout_clean": heldout}}


def test_summary_means_pairs_and_oracle_gap_by_hand():
    records = [
        *[record("random-fixed", s, v) for s, v in enumerate([6.0, 6.2, 6.1])],
        *[record("oracle-clean", s, v) for s, v in enumerate([5.0, 5.2, 5.1])],
        *[record("mine", s, v) for s, v in enumerate([5.5, 5.8, 5.6])],
        record("mine", 7, 1.0),  # no random-fixed seed 7: not paired
        record("ablated", 0, 0.0, group="ablation"),  # not a main arm
    ]
    exp = SimpleNamespace(
        primary="heldout_clean", compare_to=["random-fixed"], gate=Gate(arm="oracle-clean", against="random-fixed")
    )
    assert paired_differences(records, "mine", "random-fixed", "heldout_clean") == pytest.approx([-0.5, -0.4, -0.5])
    s = summarise(exp, records, ["heldout_clean"])
    assert set(s["arms"]) == {"random-fixed", "oracle-clean", "mine"}
    assert s["arms"]["random-fixed"]["heldout_clean"] == {
        "mean": pytest.approx(6.1),
        "half_width": pytest.approx(4.302653 * 0.1 / 3**0.5, rel=1e-5),
        "n": 3,
    }
    mine = s["paired"]["mine"]["random-fixed"]["heldout_clean"]
    assert mine["mean"] == pytest.approx(-0.4666667) and mine["n"] == 3
    assert "random-fixed" not in s["paired"]["random-fixed"]
    # (6.1 - mean(mine)) / (6.1 - 5.1), mine's mean over its 4 seeds: (5.5 + 5.8 + 5.6 + 1.0) / 4 = 4.475
    assert s["oracle_gap_closed"]["mine"] == pytest.approx((6.1 - 4.475) / 1.0)
    assert s["oracle_gap_closed"]["oracle-clean"] == pytest.approx(1.0) and s["diagnostics"] is None
