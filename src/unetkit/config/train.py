"""``TrainConfig``: everything ``unetkit train`` needs, nested configs included."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import _check_choices, _check_min, _check_range, _Config
from .choices import LOSSES, OPTIMIZERS, PRECISIONS, SCHEDULES, TASKS
from .data import AugmentConfig, DataConfig
from .model import ModelConfig
from .objects import ObjectConfig

DEFAULT_EPOCHS = 50  # without --epochs and without a time budget


@dataclass
class TrainConfig(_Config):
    """Everything ``unetkit train`` needs; saved in RUN_DIR and in every checkpoint.

    ``model`` None means "the preset's config" (channels and classes filled in from the data).
    ``preset`` ``auto``, ``batch_size`` 0 and ``data.size`` 0x0 are decided by the auto recipe
    from the data fingerprint and the device when training starts (``unetkit.train.plan``).
    ``task`` ``instance``: touching objects apart, from ``instances/`` label images (K classes
    plus a boundary class; ``objects`` holds the target and post-processing settings).
    ``weight_map`` None: the paper's border weight map for ``instance`` (from the real
    instances, so the pixels between touching objects weigh most), off otherwise.
    ``task``/``loss`` ``auto``: multi-class softmax + CE + Dice, binary sigmoid + BCE + Dice for
    sigmoid-head presets with 2 classes, image-to-image MSE for ``restore`` / ``x3``.
    ``epochs`` None: with a ``time_budget`` (minutes) the budget decides the length (and the
    LR schedule anneals over it), without one 50 epochs. ``val_every`` 0: validate the first
    epoch, the last, and in between whenever training has run 4x as long as the previous
    validation took. ``save_every`` N: write ``last.pt`` every N epochs; 0 (auto): after
    every epoch unless the previous write was so recent that writing would take more than 2 %
    of the time (the budget goes to training), and always at the end. ``ema``: decay of an
    exponential moving average of the weights (0 = off) that validation scores and
    checkpoints hold for prediction (``best.pt`` and ``last.pt``; ``last.pt`` also keeps the
    raw weights for ``--resume``).
    ``workers`` -1 (auto): data-loading processes, 0 on a CPU (the training step needs every
    core) and ``min(8, CPUs per GPU - 1)`` on a GPU, which loading in the training process
    would leave waiting on the host; they live for the whole run, and the batches do not
    depend on their number.
    """

    dataset: str = ""
    run_dir: str = ""
    preset: str = "auto"
    model: ModelConfig | None = None
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    objects: ObjectConfig = field(default_factory=ObjectConfig)
    classes: tuple[str, ...] | None = None
    task: str = "auto"
    loss: str = "auto"
    class_weights: tuple[float, ...] | str | None = None
    weight_map: bool | None = None
    weight_map_objects: str = "foreground"
    w0: float = 10.0
    sigma: float = 5.0
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    epochs: int | None = None
    batch_size: int = 0
    steps_per_epoch: int = 0
    accumulate: int = 1
    clip_grad: float = 0.0
    ema: float = 0.99
    early_stop: int = 0
    val_fraction: float = 0.2
    val_stems: tuple[str, ...] | None = None
    val_every: int = 0
    save_every: int = 0
    best_metric: str = "mean_iou"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    device: str = "auto"
    workers: int = -1
    seed: int = 0
    deterministic: bool = False
    time_budget: float = 0.0
    sync_bn: bool = False
    tensorboard: bool = False
    panels: int = 4

    @property
    def max_epochs(self) -> int:
        """``epochs`` when given; else the time budget decides (no epoch cap), else 50."""
        if self.epochs is not None:
            return int(self.epochs)
        return 10**9 if self.time_budget > 0 else DEFAULT_EPOCHS

    def __post_init__(self) -> None:
        _check_choices(
            self,
            {
                "task": TASKS,
                "loss": LOSSES,
                "optimizer": OPTIMIZERS,
                "schedule": SCHEDULES,
                "precision": PRECISIONS,
            },
        )
        if self.epochs is not None:
            _check_min(self, ("epochs",), 1)
        _check_min(self, ("accumulate",), 1)
        _check_min(self, ("save_every",), 0)
        _check_min(self, ("batch_size",), 0)
        _check_min(self, ("val_every",), 0)
        _check_min(self, ("lr", "sigma"), 0, strict=True)
        _check_min(self, ("weight_decay", "warmup_epochs", "clip_grad", "time_budget", "w0"), 0)
        _check_min(self, ("steps_per_epoch", "early_stop", "panels"), 0)
        _check_min(self, ("workers",), -1)
        _check_range("momentum", self.momentum, 0.0, 1.0)
        _check_range("ema", self.ema, 0.0, 1.0)
        _check_range("val_fraction", self.val_fraction, 0.0, 1.0)
        weights = self.class_weights
        if not (
            weights is None
            or weights == "balanced"
            or (isinstance(weights, tuple) and all(w >= 0 for w in weights))
        ):
            raise ValueError(f"class_weights must be 'balanced' or numbers >= 0; got {weights!r}")
        objects = self.weight_map_objects
        if not (objects == "foreground" or (isinstance(objects, str) and objects.isdigit())):
            raise ValueError(
                f"weight_map_objects must be 'foreground' or a class index; got {objects!r}"
            )
