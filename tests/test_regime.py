"""The continued-training regime: the constant schedule with a cool-down, and arms that start from
the warm start's AdamW moments instead of re-warming up from zero moments."""

from itertools import islice

import pytest
import torch

from actors.prepare import write_local_sequences
from actors.trainer import OPTIMIZER_FILE, _save_model, build_trainer, launch_args
from dataio.corpus import BUILTIN_WIKI, read_documents
from jobs.config import PipelineConfig, WarmStartConfig, load_config
from training.loop import TrainConfig, load_state, lr_scheduler, save_state
from training.model import ModelConfig, build_model
from training.tokenizer import load_tokenizer

LR = 1e-3


def lrs(cfg: TrainConfig) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=cfg.learning_rate)
    scheduler = lr_scheduler(optimizer, cfg)
    out = []
    for _ in range(cfg.steps):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize(
    "cfg, factors",
    [
        # linear: warm-up step / 3, then (10 - step) / 7
        ({"schedule": "linear", "warmup_steps": 3}, [0, 1 / 3, 2 / 3, 1, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7]),
        # constant: warm-up step / 3, the peak, then (10 - step) / 4 over the last 4 steps
        (
            {"schedule": "constant", "warmup_steps": 3, "cooldown_steps": 4},
            [0, 1 / 3, 2 / 3, 1, 1, 1, 1, 3 / 4, 2 / 4, 1 / 4],
        ),
        ({"schedule": "constant", "warmup_steps": 0, "cooldown_steps": 0}, [1] * 10),  # a warm start ending at the peak
        (
            {"schedule": "constant", "warmup_steps": 0, "cooldown_steps": 10},
            [1, 9 / 10, 8 / 10, 7 / 10, 6 / 10, 5 / 10, 4 / 10, 3 / 10, 2 / 10, 1 / 10],
        ),
        ({"schedule": "constant", "warmup_steps": 10, "cooldown_steps": 0}, [s / 10 for s in range(10)]),
    ],
)
def test_learning_rate_at_each_step_matches_the_hand_written_schedule(cfg, factors):
    got = lrs(TrainConfig(steps=10, learning_rate=LR, **cfg))
    assert got == pytest.approx([LR * f for f in factors], rel=1e-12, abs=0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"schedule": "cosine"}, "schedule must be one of"),
        ({"cooldown_steps": -1, "schedule": "constant"}, "cooldown_steps must be >= 0"),
        ({"cooldown_steps": 2}, "cooldown_steps .2. needs schedule: constant"),
        (
            {"schedule": "constant", "warmup_steps": 4, "cooldown_steps": 7},
            r"warmup_steps \+ cooldown_steps must be <= steps",
        ),
    ],
)
def test_schedule_config_errors(change, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(steps=10, **change)


def test_schedule_errors_name_the_section_they_were_read_under(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("warmstart: {steps: 3, schedule: constant, warmup_steps: 2, cooldown_steps: 2}\n")
    with pytest.raises(ValueError, match=r"c\.yaml: warmstart\.warmup_steps \+ cooldown_steps must be <= steps"):
        load_config(config)
    config.write_text("train: {schedule: constant, warmup_steps: 0, cooldown_steps: 5, init_optimizer: true}\n")
    assert load_config(config).train.init_optimizer
    with pytest.raises(ValueError, match=r"warmstart\.init_optimizer needs model\.init_from"):
        PipelineConfig(warmstart=WarmStartConfig(init_optimizer=True))


def test_dropout_zero_reaches_the_model(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "model: {kind: gpt2, hidden_size: 32, num_layers: 1, num_heads: 2, dropout: 0}\nembed: {layer: -1}\n"
    )
    cfg = load_config(config).model
    assert cfg.dropout == 0.0
    model = build_model(cfg, vocab_size=50, pad_id=0, eos_id=1)
    assert model.config.resid_pdrop == model.config.embd_pdrop == model.config.attn_pdrop == 0.0


MODEL = ModelConfig(kind="bert", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seq_len=64)
WARM = TrainConfig(
    steps=5, global_batch_size=8, learning_rate=LR, warmup_steps=2, schedule="constant", subset="full", seed=2
)
ARM = TrainConfig(
    steps=6,
    global_batch_size=8,
    learning_rate=LR,
    warmup_steps=0,
    schedule="constant",
    cooldown_steps=6,
    subset="random",
    init_optimizer=True,
    seed=5,
)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A warm start trained in process and published as a pipeline's warm start is: the model and,
    beside it, its AdamW state. Returns (data folder, model folder, the warm trainer)."""
    root = tmp_path_factory.mktemp("regime")
    texts = [d.text for d in islice(read_documents(BUILTIN_WIKI), 60)]
    write_local_sequences(texts, root / "data", kind="bert", seq_len=64, vocab_size=400)
    args = launch_args(train=WARM, model=MODEL, data=root / "data", out_dir=root / "warm", save_optimizer=True)
    trainer, tok = build_trainer(args, rank=0, world=1, device=torch.device("cpu"))
    lr = [trainer.train_step(s)["lr"] for s in range(WARM.steps)]
    assert lr == pytest.approx([0, LR / 2, LR, LR, LR])  # ends at the peak: no cool-down
    _save_model(trainer.model, tok, args["model_out"], trainer.optimizer)
    return root / "data", root / "warm" / "model", trainer


def arm(data, model_dir, out, cfg: TrainConfig = ARM):
    args = launch_args(train=cfg, model=MODEL, data=data, out_dir=out, fraction=0.5, init_from=str(model_dir))
    return build_trainer(args, rank=0, world=1, device=torch.device("cpu"))[0]


def test_an_arm_starts_from_the_warm_starts_moments_at_the_peak_rate(warm, tmp_path):
    data, model_dir, warm_trainer = warm
    assert (model_dir / OPTIMIZER_FILE).exists()
    trainer = arm(data, model_dir, tmp_path)
    warm_params = list(warm_trainer.model.parameters())
    params = list(trainer.model.parameters())
    assert len(params) == len(warm_params)
    for p, w in zip(params, warm_params):
        torch.testing.assert_close(p, w, rtol=0, atol=0)  # the weights, and
        got, want = trainer.optimizer.state[p], warm_trainer.optimizer.state[w]
        for key in ("exp_avg", "exp_avg_sq", "step"):  # the moments and step counts, exactly
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
        assert float(got["exp_avg_sq"].abs().sum()) > 0
    # This run's own hyperparameters, not the warm start's: the constant rate from step 0.
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [ARM.weight_decay, 0.0]
    assert trainer.train_step(0)["lr"] == LR

    fresh = arm(data, model_dir, tmp_path / "fresh", TrainConfig(**{**ARM.__dict__, "init_optimizer": False}))
    assert not fresh.optimizer.state  # without init_optimizer the moments start at zero, as before


def test_resume_of_an_arm_with_carried_moments_continues_exactly(warm, tmp_path):
    data, model_dir, _ = warm
    straight = arm(data, model_dir, tmp_path / "a")
    losses = [straight.train_step(s)["loss"] for s in range(ARM.steps)]
    first = arm(data, model_dir, tmp_path / "b")
    for s in range(3):
        first.train_step(s)
    save_state(first.state_dict(3), tmp_path / "state.pt")
    resumed = arm(data, model_dir, tmp_path / "b")  # loads the warm start's moments, then the checkpoint's
    start = resumed.load_state_dict(load_state(tmp_path / "state.pt"))
    assert [resumed.train_step(s)["loss"] for s in range(start, ARM.steps)] == losses[3:]


def test_init_optimizer_errors_name_the_file(warm, tmp_path):
    data, model_dir, warm_trainer = warm
    bare = tmp_path / "bare"  # a model published without its optimizer state (a run before this existed)
    _save_model(warm_trainer.model, load_tokenizer(str(data / "tokenizer"), kind="bert"), str(bare))
    with pytest.raises(ValueError, match=rf"{bare / OPTIMIZER_FILE} does not exist"):
        arm(data, bare, tmp_path / "x")
    save_state(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))]).state_dict(), bare / OPTIMIZER_FILE)
    with pytest.raises(ValueError, match=rf"{bare / OPTIMIZER_FILE} does not fit this model's parameter groups"):
        arm(data, bare, tmp_path / "x")  # one parameter group, not two
    state = load_state(model_dir / OPTIMIZER_FILE)
    state["state"][0]["exp_avg"] = torch.zeros(7)  # another model's shapes
    save_state(state, bare / OPTIMIZER_FILE)
    with pytest.raises(ValueError, match=r"does not fit this model's parameter groups: a moment of shape \(7,\)"):
        arm(data, bare, tmp_path / "x")
    with pytest.raises(ValueError, match="train.init_optimizer needs init_from"):
        build_trainer(
            launch_args(train=ARM, model=MODEL, data=data, out_dir=tmp_path / "y", fraction=0.5),
            rank=0,
            world=1,
            device=torch.device("cpu"),
        )
