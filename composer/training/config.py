"""Every training hyper-parameter, defined once: TrainConfig, and the ``composer train`` options made from it.

Torch-free, so the command line lists its options without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, get_origin, get_type_hints

from composer.nn.config import ModelConfig

MODEL_HELP = {
    "hidden_size": "LSTM units per layer.",
    "num_layers": "LSTM layers.",
    "embed_dim": "Token embedding size.",
    "dropout": "Dropout between layers (helps small corpora).",
}
"""Help for the ModelConfig fields that ``composer train`` sets (their defaults are ModelConfig's)."""


def hyperparameter(default, help: str, *, flag: str = "", min: float | None = None, max: float | None = None):
    """A TrainConfig field: its default and the help ``composer train --help`` shows for it.

    ``flag`` names its option when that is not ``--field-name``; ``min`` and ``max`` bound it
    on the command line. A tuple of names is one comma-separated option."""
    metadata = {"help": help, "flag": flag, "min": min, "max": max}
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every training hyper-parameter, each defined here once: ``composer train`` has one
    option per field (see ``train_options``), with this default and this help."""

    steps: int = hyperparameter(20_000, "Optimizer steps in all.")
    batch_size: int = hyperparameter(64, "Crops per step.")
    seq_len: int = hyperparameter(512, "Events per crop.")
    lr: float = hyperparameter(1e-3, "Peak learning rate (AdamW).")
    weight_decay: float = hyperparameter(0.01, "AdamW weight decay.")
    warmup_steps: int = hyperparameter(500, "Steps of linear learning-rate warmup (then cosine decay).")
    min_lr_ratio: float = hyperparameter(0.05, "Where the cosine decay ends, as a share of the peak learning rate.")
    clip_norm: float = hyperparameter(3.0, "Clip the gradient to this norm.")
    transpose: int = hyperparameter(3, "Augment by transposing crops up to this many semitones.", min=0, max=12)
    start_fraction: float = hyperparameter(
        0.1, "Share of crops that begin at their piece's start, so samples open like pieces.", min=0.0, max=1.0
    )
    """Opening crops: see CropSampler."""
    eval_every: int = hyperparameter(500, "Steps between validation NLL evaluations.")
    val_max_sequences: int = hyperparameter(0, "Validate on this many pieces (0: all).")
    """A fixed subset, the same on every resume; a published version is scored on the whole split."""
    train_eval_sequences: int = hyperparameter(
        16,
        "Also score this many training pieces at each evaluation, to show overfitting (0: off).",
        flag="--train-eval-pieces",
    )
    """Also score this many training pieces (untransposed, no dropout) at each evaluation:
    the gap between their NLL and validation's is what overfitting looks like (0: off)."""
    checkpoint_every: int = hyperparameter(100, "Steps between resumable checkpoints.")
    patience: int = hyperparameter(0, "Stop after this many evaluations without improvement (0: never).")
    max_minutes: float = hyperparameter(0.0, "Stop cleanly after this many minutes (0: no limit).")
    """Stop cleanly (checkpointed, best model kept) after this long (0: no limit)."""
    seed: int = hyperparameter(0, "Random seed (initial weights, crops).")
    precision: str = hyperparameter("auto", "auto, bf16 or fp32 (auto: bf16 where the hardware runs it fast).")
    """``bf16`` autocast or ``fp32``; ``auto`` takes bf16 on CUDA and on CPUs with bf16 units (AMX, AVX512-BF16)."""
    init_from: str = hyperparameter("", "Start from this model directory (fine-tuning).")
    data_genres: tuple[str, ...] = hyperparameter(
        (), "Comma-separated genres whose data to train on together.", flag="--pretrain-on"
    )
    """Train on these genres' data together (pre-training); default: the genre's own.
    Their validation splits are kept out the same way, so fine-tuning stays honest."""
    controls: bool = hyperparameter(
        False,
        "Condition on key and density (composer.codec.controls); an unconditioned --init-from model starts with "
        "zero control weights, exactly where it was.",
    )
    pointer: bool = hyperparameter(
        False,
        "Add a pointer head that copies from the piece's own past (composer.nn.pointer); it starts as the "
        "neural cache.",
    )
    pointer_only: bool = hyperparameter(False, "Train only the pointer head; the network below stays as it is.")
    control_dropout: float = hyperparameter(
        0.5,
        "Share of crops trained without the key control, and (drawn apart) without the density control, "
        "so one model composes with either, both or neither.",
        min=0.0,
        max=1.0,
    )
    ema: float = hyperparameter(
        0.0,
        "Keep an exponential moving average of the weights with this decay per step (0.99-0.999) and validate and "
        "keep the average instead of the latest weights (0: off).",
        min=0.0,
        max=0.9999,
    )
    """Polyak/EMA weight averaging: on a small corpus the average of the last few hundred steps
    generalises better than the last step's weights (it smooths the noise of small batches)."""
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"options": MODEL_HELP})
    """The network's shape (ignored but for dropout when fine-tuning: the model's own is kept)."""


@dataclass(frozen=True)
class TrainOption:
    """One ``composer train`` option: a TrainConfig field, or a field of its ModelConfig."""

    name: str
    """The field's name: also the option's parameter name (``hidden_size`` for ``model.hidden_size``)."""
    flag: str
    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    in_model: bool = False
    """A field of ``TrainConfig.model``."""
    comma_separated: bool = False
    """A tuple of names, given as one comma-separated string."""


def train_options() -> list[TrainOption]:
    """The options of ``composer train`` that make up a TrainConfig, in the dataclass's order."""
    options = []
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name == "model":
            model_hints = get_type_hints(ModelConfig)
            defaults = ModelConfig()
            for name, help in f.metadata["options"].items():
                options.append(
                    TrainOption(name, _flag(name), model_hints[name], getattr(defaults, name), help, in_model=True)
                )
            continue
        meta, kind, default = f.metadata, hints[f.name], f.default
        listed = get_origin(kind) is tuple
        if listed:
            kind, default = str, ",".join(default)
        flag = meta.get("flag") or _flag(f.name)
        help = meta.get("help", "")  # a field made without hyperparameter() still gets its option
        options.append(TrainOption(f.name, flag, kind, default, help, meta.get("min"), meta.get("max"), False, listed))
    return options


def config_from_options(values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from ``composer train``'s option values, keyed by ``TrainOption.name``
    (absent ones keep their defaults)."""
    top: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for option in train_options():
        if option.name in values:
            value = values[option.name]
            if option.comma_separated:
                value = tuple(filter(None, value.split(",")))
            (model if option.in_model else top)[option.name] = value
    return TrainConfig(**top, model=ModelConfig(**model))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
