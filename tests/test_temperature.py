"""select.temperature on INGENIOUS' importance distribution (Taylor softmax of the gains / T)."""

import math

import numpy as np
import pytest

from selection.sampling import draw_subset, taylor_softmax


def reference(gains, temperature):
    w = [1 + g / temperature + (g / temperature) ** 2 / 2 for g in gains]
    return np.array(w) / sum(w)


def test_temperature_one_is_the_paper_formula_bit_for_bit():
    g = np.random.default_rng(0).random(500) * 3
    w = 1.0 + g + 0.5 * g * g  # the function before temperature existed
    assert taylor_softmax(g, temperature=1.0).tobytes() == (w / w.sum()).tobytes()
    assert taylor_softmax(g).tobytes() == taylor_softmax(g, 1.0).tobytes()
    for t in (0.05, 0.3, 2.0, 17.0):
        np.testing.assert_allclose(taylor_softmax(g, t), reference(g.tolist(), t), rtol=1e-12)


def test_high_temperature_is_near_uniform_and_low_concentrates_on_top_gains():
    g = np.linspace(0.0, 1.0, 200)
    hot = taylor_softmax(g, temperature=1e4)
    assert np.abs(hot * len(g) - 1).max() < 1e-3
    cold = taylor_softmax(g, temperature=1e-3)
    top = np.argsort(-g)[:20]
    assert cold[top].sum() > 1.8 * taylor_softmax(g)[top].sum()
    # The second-order Taylor weight has no argmax limit: as T -> 0, p tends to g^2 / sum(g^2).
    np.testing.assert_allclose(cold, g**2 / (g**2).sum(), atol=1e-4)
    assert np.all(np.diff(cold) > 0)  # still monotone in the gain
    ids = np.arange(len(g), dtype=np.int64)
    drawn = [draw_subset([(ids, taylor_softmax(g, t))], 20, seed=0, draw=0) for t in (1e4, 1.0, 0.01)]
    mean_rank = [float(np.mean(d)) for d in drawn]  # gains increase with the id
    assert mean_rank[0] < mean_rank[1] < mean_rank[2]


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan, True, "1"])
def test_bad_temperatures_name_the_key(bad):
    with pytest.raises(ValueError, match="select.temperature must be"):
        taylor_softmax(np.array([0.1, 0.2]), temperature=bad)


@pytest.mark.parametrize("bad", [0.0, -0.5, math.inf, math.nan])
def test_select_config_validates_temperature(bad):
    from jobs.config import SelectConfig

    assert SelectConfig().temperature == 1.0 and SelectConfig(temperature=0.25).temperature == 0.25
    with pytest.raises(ValueError, match=r"select.temperature must be > 0 \(1 is the paper's\)"):
        SelectConfig(temperature=bad)


def test_temperature_is_read_from_yaml(tmp_path):
    from jobs.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("select: {temperature: 0.5}\n")
    assert load_config(path, base=tmp_path).select.temperature == 0.5
    path.write_text("select: {temperature: 0}\n")
    with pytest.raises(ValueError, match=r"c.yaml: select.temperature must be > 0"):
        load_config(path, base=tmp_path)
    path.write_text("select: {temperature: hot}\n")
    with pytest.raises(ValueError, match=r"'select.temperature' must be float"):
        load_config(path, base=tmp_path)
