"""`composer train`'s options are TrainConfig's fields: one option per hyper-parameter, no other place."""

from __future__ import annotations

import shlex
from dataclasses import fields

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from composer.cli import app
from composer.nn.model import ModelConfig
from composer.training.config import TrainConfig, config_from_options, train_options

CLI_ONLY = {"genre", "run_name", "publish", "threads", "device", "quiet"}
"""`composer train`'s options that are not training hyper-parameters."""

# Every flag `composer train` had before its options were generated, with its default: the
# scripts, the README and the deployment notes use them.
FLAGS_BEFORE = {
    "--genre": None,
    "--run-name": "",
    "--steps": 20_000,
    "--batch-size": 64,
    "--seq-len": 512,
    "--lr": 1e-3,
    "--weight-decay": 0.01,
    "--warmup-steps": 500,
    "--hidden-size": 512,
    "--num-layers": 3,
    "--embed-dim": 256,
    "--dropout": 0.0,
    "--eval-every": 500,
    "--checkpoint-every": 100,
    "--val-max-sequences": 0,
    "--train-eval-pieces": 16,
    "--transpose": 3,
    "--patience": 0,
    "--max-minutes": 0.0,
    "--init-from": "",
    "--pretrain-on": "",
    "--seed": 0,
    "--precision": "auto",
    "--publish": "",
    "--threads": 0,
    "--device": "",
    "--quiet": False,
    "--start-fraction": 0.1,
}


def train_params() -> dict:
    return {p.name: p for p in get_command(app).commands["train"].params}  # type: ignore[attr-defined]


def test_every_train_config_field_is_one_option_and_every_option_a_field_or_cli_only():
    params = train_params()
    config_fields = {f.name for f in fields(TrainConfig)} - {"model"}
    # the codec fixes the vocabulary; --controls sets control_dim to what composer.codec.controls makes
    model_fields = {f.name for f in fields(ModelConfig)} - {"vocab_size", "control_dim"}
    assert set(params) - CLI_ONLY == config_fields | model_fields
    assert set(params) >= CLI_ONLY
    defaults, model_defaults = TrainConfig(), ModelConfig()
    for name in config_fields:
        default = getattr(defaults, name)
        assert params[name].default == (",".join(default) if isinstance(default, tuple) else default), name
    for name in model_fields:
        assert params[name].default == getattr(model_defaults, name), name
    for name, param in params.items():
        assert param.help, f"--{name} has no help"


def test_the_flags_and_defaults_of_before_are_all_there():
    by_flag = {flag: p for p in train_params().values() for flag in p.opts}
    for flag, default in FLAGS_BEFORE.items():
        assert flag in by_flag, flag
        if default is not None:
            assert by_flag[flag].default == default, flag
    assert by_flag["-g"].name == "genre"


def test_the_shipped_models_recipe_parses_to_the_same_settings():
    # scripts/train_shipped_models.sh's fine-tuning stage, with its variables filled in
    args = shlex.split(
        "--genre folk --run-name ft-v9 --init-from runs/classical/base-v9/best --steps 550 --batch-size 32 "
        "--seq-len 512 --lr 5e-4 --warmup-steps 20 --eval-every 50 --val-max-sequences 30 --patience 6 "
        "--max-minutes 30 --threads 1 --quiet --publish v9 --pretrain-on classical,pop --train-eval-pieces 4 "
        "--dropout 0.2 --transpose 0 --start-fraction 0.5"
    )
    ctx = get_command(app).commands["train"].make_context("train", args)  # type: ignore[attr-defined]
    values = dict(ctx.params)
    assert {k: values.pop(k) for k in CLI_ONLY} == {
        "genre": "folk",
        "run_name": "ft-v9",
        "publish": "v9",
        "threads": 1,
        "device": "",
        "quiet": True,
    }
    cfg = config_from_options(values)
    assert cfg == TrainConfig(
        steps=550,
        batch_size=32,
        seq_len=512,
        lr=5e-4,
        warmup_steps=20,
        eval_every=50,
        val_max_sequences=30,
        patience=6,
        max_minutes=30.0,
        init_from="runs/classical/base-v9/best",
        data_genres=("classical", "pop"),
        train_eval_sequences=4,
        transpose=0,
        start_fraction=0.5,
        model=ModelConfig(dropout=0.2),
    )
    assert config_from_options({}) == TrainConfig()


@pytest.mark.parametrize("args", [["--transpose", "13"], ["--transpose", "-1"], ["--start-fraction", "1.5"]])
def test_bounds_are_checked_before_anything_runs(args):
    done = CliRunner().invoke(app, ["train", "--genre", "folk", *args])
    assert done.exit_code == 2
    assert "Invalid value" in done.output


def test_options_come_in_the_dataclass_order_after_the_run_name():
    names = list(train_params())
    assert names[:2] == ["genre", "run_name"]
    assert names[2 : 2 + len(train_options())] == [o.name for o in train_options()]
