"""Which runs a sweep launches, and the work each does (``poolbench-bench gpu-hours``, step 1).

:func:`plan_runs` enumerates the runs of ``poolbench-train -m experiment=<EXPERIMENT>
[OVERRIDES]`` with :func:`poolbench.grid.grid_runs`, exactly as Hydra's basic sweeper
does, composes each run's config as :func:`poolbench.grid.resolve_run_dirs` does, and turns
it into a :class:`RunPlan`: the model and its options, the pooling method and its
hyperparameters (as ``poolbench.train`` passes them to :func:`~poolbench.models.build_model`),
the dataset (image size, classes and the official train/test sizes of
:data:`poolbench.data.DATASETS`), ``data.val_size``, the batch sizes and the trainer's
limits. Training batches per epoch are ``floor((train_size - val_size) / batch_size)`` (the
training loader drops the last partial batch), then limited as Lightning limits them;
validation runs every ``check_val_every_n_epoch`` epochs; the test set is evaluated twice
at the end (final weights and the best-validation checkpoint; once without a validation
split). :class:`ModelKey` is everything that decides a run's FLOPs and operators.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ...config import model_arguments
from ...data import dataset_spec
from ...grid import composed_configs, grid_runs
from ...models import model_options


def freeze(value):
    """A hashable version of a config value (lists -> tuples, dicts -> sorted item tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


# the optimizer options that change which operators an SGD step dispatches (lr does not)
RECIPE_OPTIM = (("momentum", 0.9), ("nesterov", False), ("weight_decay", 5e-4))


@dataclass(frozen=True)
class ModelKey:
    """Everything that decides a run's FLOPs per image and operators per step."""

    model: str
    model_options: tuple  # frozen items of the model's own kwargs (width, stem, ...)
    pool: str
    pool_hparams: tuple  # frozen items
    image_size: int
    num_classes: int
    precision: str = "16-mixed"  # as training resolves it on CUDA (auto: 16-mixed)
    channels_last: bool = True
    optim: tuple = RECIPE_OPTIM  # sorted (name, value) items of momentum, nesterov, weight_decay

    @property
    def width(self):
        return dict(self.model_options).get("width")

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.model_options)
        hp = ", ".join(f"{k}={v}" for k, v in self.pool_hparams)
        extra = [self.precision] + ([] if self.channels_last else ["contiguous"])
        if self.optim != RECIPE_OPTIM:
            extra.append("SGD " + ", ".join(f"{k}={v}" for k, v in self.optim))
        return (f"{self.model} ({opts}), pool={self.pool}" + (f" ({hp})" if hp else "")
                + f", {self.image_size}x{self.image_size}, {self.num_classes} classes, "
                + ", ".join(extra))


# Lightning's precision names (and poolbench's "auto") -> the precision a CUDA run trains in
_PRECISIONS = {"auto": "16-mixed", "16": "16-mixed", "16-mixed": "16-mixed",
               "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed", "32": "32-true",
               "32-true": "32-true", "64": "64-true", "64-true": "64-true",
               "16-true": "16-true", "bf16-true": "bf16-true"}


def cuda_precision(requested) -> str:
    """The precision a run with ``trainer.precision=requested`` trains in on CUDA
    (``poolbench.train.resolve_precision``: auto is 16-mixed there)."""
    name = str(requested)
    if name not in _PRECISIONS:
        raise ValueError(f"trainer.precision={requested!r} is not one of "
                         f"{sorted(_PRECISIONS)}")
    return _PRECISIONS[name]


@dataclass
class RunPlan:
    """One run of the grid and the work it does."""

    index: int
    overrides: list[str]
    data: str
    model: str
    pool: str
    seed: int
    key: ModelKey
    batch_size: int
    eval_batch_size: int
    train_images: int  # training split (official train set minus val_size)
    val_images: int  # validation images per validation pass (after limit_val_batches)
    test_images: int  # test images per test pass (after limit_test_batches)
    epochs: int  # epochs the run trains (max_epochs, or fewer with max_steps)
    steps_per_epoch: int
    train_steps: int
    val_passes: int
    test_passes: int
    compiled: bool = False  # the run's model is torch.compile'd (config key compile)

    @property
    def image_size(self) -> int:
        return self.key.image_size

    @property
    def width(self):
        return self.key.width

    @property
    def eval_images(self) -> int:
        """Images the run evaluates in total (every validation pass and every test pass)."""
        return self.val_passes * self.val_images + self.test_passes * self.test_images


def lightning_num_batches(length: int, limit, name: str) -> int:
    """Batches Lightning runs of a loader with ``length`` batches under ``limit_*_batches``.

    As ``lightning.pytorch``: None means 1.0; an int is a number of batches (at most
    ``length``); a float is a fraction, ``int(length * limit)``, and a positive fraction
    that rounds to 0 batches is an error.
    """
    if limit is None:
        limit = 1.0
    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
        raise ValueError(f"trainer.{name} must be None, an int or a float, got {limit!r}")
    if isinstance(limit, int):
        if limit < 0:
            raise ValueError(f"trainer.{name} must be >= 0, got {limit}")
        return min(length, limit)
    if not 0.0 <= limit <= 1.0:
        raise ValueError(f"trainer.{name} as a fraction must be in [0, 1], got {limit}")
    if length == 0:
        return 0
    n = int(length * limit)
    if n == 0 and limit > 0.0:
        raise ValueError(f"trainer.{name}={limit} of {length} batches is 0 batches; Lightning "
                         f"rejects it (use at least {1.0 / length})")
    return n


def _limited_images(n_images: int, batch: int, limit, name: str) -> int:
    """Images an evaluation loader (no drop_last) yields under ``limit``."""
    batches = lightning_num_batches(math.ceil(n_images / batch), limit, name)
    return min(n_images, batches * batch)


def plan_run(index: int, overrides: list[str], cfg) -> RunPlan:
    """The :class:`RunPlan` of one composed run config ``cfg``."""
    spec = dataset_spec(cfg.data.name)
    pool_hparams, model_kwargs = model_arguments(cfg)  # as poolbench.train.build() has them
    options = {**model_options(cfg.model.name), **model_kwargs}  # defaults filled in
    o = cfg.optim
    optim = (("momentum", float(o.momentum)), ("nesterov", bool(o.nesterov)),
             ("weight_decay", float(o.weight_decay)))
    key = ModelKey(cfg.model.name, freeze(options), cfg.pool.name, freeze(pool_hparams),
                   spec.image_size, spec.num_classes,
                   precision=cuda_precision(cfg.trainer.get("precision", "auto")),
                   channels_last=bool(cfg.get("channels_last", True)), optim=optim)

    d, t = cfg.data, cfg.trainer
    val_size = spec.val_size if d.get("val_size") is None else int(d.val_size)
    batch = int(d.batch_size)
    eval_batch = int(d.get("eval_batch_size") or batch)
    train_n = spec.train_size - val_size
    if train_n <= 0:
        raise ValueError(f"data.val_size={val_size} leaves no training images of the "
                         f"{spec.train_size:,} in {spec.title}")
    # the training loader drops the last partial batch (PoolbenchDataModule drop_last=True)
    steps = lightning_num_batches(train_n // batch, t.get("limit_train_batches"),
                                  "limit_train_batches")
    max_epochs, max_steps = t.get("max_epochs"), t.get("max_steps", -1)
    max_steps = -1 if max_steps is None else int(max_steps)
    if max_epochs is None:  # Lightning: 1000 epochs unless max_steps bounds the run
        max_epochs = -1 if max_steps != -1 else 1000
    max_epochs = int(max_epochs)
    if max_epochs < 0 and max_steps < 0:
        raise ValueError("trainer.max_epochs=-1 without trainer.max_steps: the run is unbounded")
    epochs = max_epochs if max_epochs >= 0 else math.ceil(max_steps / steps) if steps else 0
    train_steps = epochs * steps
    if max_steps >= 0 and max_steps < train_steps:
        train_steps = max_steps
        epochs = math.ceil(max_steps / steps) if steps else 0
    every = int(t.get("check_val_every_n_epoch") or 1)
    val_images = (_limited_images(val_size, eval_batch, t.get("limit_val_batches"),
                                  "limit_val_batches") if val_size > 0 else 0)
    val_passes = epochs // every if val_images > 0 else 0
    test_images = _limited_images(spec.test_size, eval_batch, t.get("limit_test_batches"),
                                  "limit_test_batches")
    # poolbench.train: test on the final weights, then on best.ckpt if validation ran
    test_passes = 2 if val_passes > 0 else 1
    return RunPlan(
        index=index, overrides=list(overrides), data=cfg.data.name, model=cfg.model.name,
        pool=cfg.pool.name, seed=int(cfg.seed), key=key, batch_size=batch,
        eval_batch_size=eval_batch, train_images=train_n, val_images=val_images,
        test_images=test_images, epochs=epochs, steps_per_epoch=steps,
        train_steps=train_steps, val_passes=val_passes, test_passes=test_passes,
        compiled=bool(cfg.get("compile", False)))


def plan_runs(experiment: str, overrides: Sequence[str] | None = None) -> list[RunPlan]:
    """The runs of ``poolbench-train -m experiment=<experiment> <overrides>``, planned.

    Unknown experiments raise ``ValueError`` (from :func:`poolbench.grid.grid_runs`).
    """
    runs = grid_runs(experiment, list(overrides or []))
    return [plan_run(run.index, run.overrides, cfg) for run, cfg in composed_configs(runs)]

