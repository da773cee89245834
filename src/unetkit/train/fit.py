"""fit(config) -> run folder: the epochs, checkpoints, history, resume and DDP of one run (its
configuration settled by ``plan.py``, validation by ``validate.py``, time by ``pacing.py``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, cast

import torch

from ..checkpoint import make_checkpoint, save_checkpoint
from ..config import TrainConfig
from ..data.dataset import SegmentationDataset
from ..data.fingerprint import describe
from ..data.transforms import Augmenter
from ..device import resolve_device, resolve_precision, resolve_workers
from ..distributed import DistInfo, all_mean, init_distributed, shutdown_distributed
from ..errors import UnetkitError
from ..files import clean_stale_temps, write_text
from ..models.unet import UNet
from . import artifacts
from .criterion import build_criterion, weight_map_fn
from .ema import WeightAverage
from .loop import EpochLoader, StepContext, train_one_epoch
from .pacing import Pacer
from .plan import (
    dataset_info,
    is_regression,
    network_class_names,
    plan_from_fingerprint,
    resolve_config,
    run_split,
)
from .rundir import check_resumable, check_run_dir, discard_failed_start
from .setup import build_optimizer, build_scheduler, epoch_batches
from .validate import Validator, whole_images

log = logging.getLogger(__name__)


def fit(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train a U-Net as ``config`` says; returns the run folder (``last.pt``, ``best.pt``, ...).

    Args:
        config: the training configuration (``dataset`` and ``run_dir`` required).
        resume: continue the run in ``config.run_dir`` from its ``last.pt`` (same data and
            config; ``epochs`` and ``time_budget`` may change).
        overwrite: allow a non-empty ``run_dir`` for a fresh run.

    Raises:
        UnetkitError: bad dataset, non-empty run folder, resume mismatch, non-finite loss.
    """
    dist_info = init_distributed(config.device)
    try:
        result = _Trainer(config, dist_info, resume, overwrite).run()
    except BaseException:
        shutdown_distributed(dist_info)
        raise
    shutdown_distributed(dist_info, together=True)
    return result


class _Trainer:
    """State of one training run; ``run()`` is the whole loop."""

    def __init__(self, config: TrainConfig, dist_info: DistInfo, resume: bool, overwrite: bool):
        if not config.dataset or not config.run_dir:
            raise UnetkitError("training needs a dataset folder and a run folder (-o RUN_DIR)")
        self.dist = dist_info
        self.run_dir = Path(config.run_dir)
        if dist_info.is_main:  # temp files of a killed run are not "content" of the folder
            clean_stale_temps(self.run_dir, recursive=True)
        self.resume_ckpt = check_run_dir(self.run_dir, resume, overwrite)
        self.resume_state = None if self.resume_ckpt is None else self.resume_ckpt.train_state
        self.info = dataset_info(config)
        self.cfg = cfg = resolve_config(config, self.info)
        recorded = (self.resume_state or {}).get("data") or {}
        self.train_stems, self.val_stems, self.val_regions, self.split_reason = run_split(
            self.info, cfg, recorded
        )
        self.device = resolve_device(cfg.device, dist_info.local_rank)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.cfg = cfg = cfg.replace(precision=self.precision)  # record what "auto" chose
        assert cfg.model is not None  # resolve_config fills in the model and the classes
        if tuple(cfg.data.size) != (0, 0):  # a given size: checked before any image is read
            with torch.device("meta"):
                UNet(cfg.model).check_input(self._train_input_size())
        self._build_data()
        # every input is read and checked before the run folder is touched: the training
        # images by the fingerprint pass (which reads each one), the validation images here
        resumed = self.resume_state
        planned = plan_from_fingerprint(
            cfg, self.train_set, self.train_stems, self.device,
            width_auto=config.preset == "auto" and config.model is None,
            images=len(self.info.stems), world_size=self.dist.world_size,
            resumed_floor=None if resumed is None else int(resumed.get("min_epoch_crops", 0)),
        )  # fmt: skip
        self.cfg, self.fingerprint, self.steps = planned.config, planned.fingerprint, planned.steps
        self.plan_reason, self.min_epoch_crops = planned.reasons, planned.min_epoch_crops
        self.val_set.config = whole_images(self.cfg.data)
        if self.dist.is_main:
            self.val_set.check_all()
        cfg = self.cfg
        assert cfg.model is not None
        with torch.device("meta"):  # the size rule needs the config, not the weights
            UNet(cfg.model).check_input(self._train_input_size())
        if self.resume_state is not None:
            check_resumable(
                self.resume_state, cfg, self.train_stems, self.val_stems, self.run_dir,
                self.val_regions,
            )  # fmt: skip
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(cfg.seed)
        self.model = UNet(cfg.model)
        if cfg.task == "instance" and cfg.objects.head == "rays":
            bias = cast(torch.nn.Conv2d, self.model.head[0]).bias
            assert bias is not None  # the head's 1x1 conv has one
            with torch.no_grad():  # the rays start at the mean ray length (``ray_scale``)
                bias[-cfg.objects.n_rays :].fill_(1.0)
        self._build_training()

    # -- set-up ----------------------------------------------------------------------------
    def _train_input_size(self) -> tuple[int, int]:
        h, w = self.cfg.data.size
        assert self.cfg.model is not None  # set by resolve_config
        s = self.cfg.model.scale
        return (h // s, w // s) if is_regression(self.cfg) else (h, w)

    def _build_data(self) -> None:
        cfg, info = self.cfg, self.info
        self.train_set = SegmentationDataset(
            info,
            self.train_stems,
            cfg.data,
            train=True,
            weight_fn=weight_map_fn(cfg, info),
            seed=cfg.seed,
            boundary_width=cfg.objects.boundary_width if cfg.task == "instance" else 0,
            boundary_fraction=cfg.objects.boundary_fraction,
            instance_head=cfg.objects.head,
            n_rays=cfg.objects.n_rays,
            regions=self.val_regions,
        )
        # held-out regions: the images themselves, each scored on its band only
        val_stems = [s for s in self.info.stems if s in self.val_regions] or self.val_stems
        self.val_set = SegmentationDataset(
            info, val_stems, whole_images(cfg.data), train=False, regions=self.val_regions
        )
        # auto workers stay "auto" in the config: a run resumed on another machine decides anew
        workers = resolve_workers(cfg.workers, self.device)
        self.epochs = EpochLoader(self.train_set, workers, pin_memory=self.device.type == "cuda")

    def _build_training(self) -> None:
        cfg, dev = self.cfg, self.device
        assert cfg.model is not None  # set by resolve_config
        model = self.model.to(dev)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if cfg.sync_bn and dev.type != "cuda":
            raise UnetkitError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only)")
        if self.dist.enabled and cfg.sync_bn:
            # converts the BatchNorm layers in place and returns the same (non-BN) root module
            model = cast(UNet, torch.nn.SyncBatchNorm.convert_sync_batchnorm(model))
        self.net: UNet = model
        # the moving average of the weights: what validation scores and checkpoints hold
        self.ema = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
        self.eval_net: UNet = cast(UNet, self.ema.model) if self.ema is not None else model
        wrapped: torch.nn.Module = model
        if self.dist.enabled:
            ids = [dev.index] if dev.type == "cuda" else None
            wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        # torch.compile of a module is a module (OptimizedModule); its stubs say Callable
        self.train_model = cast(torch.nn.Module, torch.compile(wrapped)) if cfg.compile else wrapped
        self.loss_fn = build_criterion(cfg, self.info, dev)
        self.optimizer = build_optimizer(
            cfg.optimizer, self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
            momentum=cfg.momentum, nesterov=cfg.nesterov,
        )  # fmt: skip
        self.pacer = pacer = Pacer(cfg.time_budget, cfg.val_every, self.dist, dev)
        self.scheduler = build_scheduler(
            cfg.schedule,
            self.optimizer,
            self.steps // cfg.accumulate or 1,
            epochs=cfg.max_epochs,
            warmup_epochs=cfg.warmup_epochs,
            best_metric=cfg.best_metric,
            budget_used=(lambda: pacer.budget_used) if cfg.time_budget > 0 else None,
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.augment = Augmenter(cfg.augment, self.info.ignore_index)
        self.aug_gen = torch.Generator()
        self.ctx = StepContext(
            dev,
            self.precision,
            cfg.channels_last,
            cfg.task,
            cfg.accumulate,
            cfg.clip_grad,
            cfg.model.scale,
        )
        self.epoch, self.global_step, self.step_in_epoch = 0, 0, 0
        self.history: list[dict] = []
        self.validator = Validator(cfg, self.info, self.val_set, self.run_dir, self.dist, dev,
                                   self.precision)  # fmt: skip
        self.best_value, self.best_epoch, self.bad_validations = None, 0, 0
        if self.resume_state is not None:
            self._restore(self.resume_state)

    # -- state -----------------------------------------------------------------------------
    def _train_state(self, full: bool = True) -> dict:
        assert self.cfg.classes is not None  # set by resolve_config
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.global_step,
            "step_in_epoch": self.step_in_epoch,
            "best_metric": self.cfg.best_metric,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "metrics": self.history[-1] if self.history else {},
            "fingerprint": self.fingerprint,
            **({"min_epoch_crops": self.min_epoch_crops} if self.min_epoch_crops else {}),
            # the split this model was trained with: `evaluate` scores only its val images
            "data": {
                "classes": list(self.cfg.classes),
                "train": self.train_stems,
                "val": self.val_stems,
                # the small-set rule's held-out band of each image, (top, bottom, left, right)
                **({"val_regions": {s: list(b) for s, b in self.val_regions.items()}}
                   if self.val_regions else {}),
                # where they were: `export --int8` calibrates on them (it may be given another)
                "dataset": str(self.info.root.resolve()),
            },
        }  # fmt: skip
        if not full:
            return state
        state.update(
            {
                "config": self.cfg.to_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "augment": self.aug_gen.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                },
                "history": self.history,
                "bad_validations": self.bad_validations,
                "raw_weights": (
                    {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
                    if self.ema is not None
                    else None
                ),
                "ema_updates": self.ema.updates if self.ema is not None else 0,
            }
        )
        return state

    def _restore(self, state: dict) -> None:
        ckpt = self.resume_ckpt  # read once, by check_run_dir
        raw = state.get("raw_weights")  # with an EMA: the training weights, beside the average
        self.net.load_state_dict(raw if raw is not None else ckpt.state_dict)
        if self.ema is not None:
            self.ema.model.load_state_dict(ckpt.state_dict)
            self.ema.updates = state.get("ema_updates", 0)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step = state["epoch"], state["step"]
        self.step_in_epoch = state.get("step_in_epoch", 0)
        self.history = list(state.get("history", []))
        self.best_value, self.best_epoch = state.get("best_value"), state.get("best_epoch", 0)
        self.bad_validations = state.get("bad_validations", 0)
        self._saved_rng = state.get("rng")
        log.info("resuming %s at epoch %d, step %d", self.run_dir, self.epoch, self.global_step)

    def _save(self, name: str, full: bool = True) -> None:
        if not self.dist.is_main:
            return
        assert self.cfg.classes is not None  # set by resolve_config
        ckpt = make_checkpoint(
            self.eval_net,
            classes=list(self.cfg.classes),
            palette=self.info.palette,
            preprocessing=self.cfg.data,
            task=self.cfg.task,
            ignore_index=self.info.ignore_index,
            preset=self.cfg.preset,
            train_state=self._train_state(full),
            extra={"objects": self.cfg.objects.to_dict()} if self.cfg.task == "instance" else None,
        )
        save_checkpoint(ckpt, self.run_dir / name)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> Path:
        try:
            return self._run()
        except BaseException:
            # a fresh run that fails before its first checkpoint leaves no folder that is
            # neither resumable nor empty (the retry would be refused)
            if self.dist.is_main and self.resume_state is None:
                discard_failed_start(self.run_dir)
            raise
        finally:
            self.epochs.close()

    def _run(self) -> Path:
        cfg = self.cfg
        assert cfg.classes is not None  # set by resolve_config
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.run_dir / "config.json", cfg.pretty() + "\n")
            log.info(
                "unetkit train: %d train / %d val images, classes %s, device %s, "
                "precision %s, %d step(s)/epoch, %d loading process(es)\n%s\n%s\nconfig:\n%s",
                len(self.train_stems),
                len(self.val_stems),
                list(cfg.classes),
                self.device,
                self.precision,
                self.steps,
                self.epochs.workers,
                describe(self.fingerprint, network_class_names(cfg)),
                f"{self.plan_reason}\n{self.split_reason}",
                cfg.pretty(),
            )
        self.writer = artifacts.tensorboard_writer(
            self.run_dir, cfg.tensorboard and self.dist.is_main
        )
        self.pacer.begin()
        stopped = False
        while self.epoch < cfg.max_epochs and not stopped:
            stopped = self._run_epoch()
        if cfg.task == "instance" and cfg.objects.head == "rays" and self.dist.is_main:
            self.cfg = self.validator.choose_rays_thresholds(cfg, self.val_stems, self.val_regions)
        if self.writer is not None:
            self.writer.close()
        return self.run_dir

    def _run_epoch(self) -> bool:
        cfg, epoch = self.cfg, self.epoch + 1
        seed = cfg.seed * 1_000_003 + epoch * 7919 + self.dist.rank
        torch.manual_seed(seed)
        self.aug_gen.manual_seed(seed)
        skip = self.step_in_epoch
        saved_rng = getattr(self, "_saved_rng", None)
        if skip and saved_rng:  # resuming mid-epoch
            torch.set_rng_state(saved_rng["torch"])
            self.aug_gen.set_state(saved_rng["augment"])
        self._saved_rng = None
        order = epoch_batches(len(self.train_set), cfg.batch_size, self.steps, cfg.seed, epoch,
                              self.dist.rank, self.dist.world_size)  # fmt: skip
        loader = self.epochs.epoch(epoch, list(order)[skip:])

        def on_step(i: int) -> None:
            self.global_step += 1
            self.step_in_epoch = i

        result = train_one_epoch(
            self.train_model,
            self.loss_fn,
            self.optimizer,
            self.scheduler,
            self.scaler,
            loader,
            self.ctx,
            augment=self.augment,
            generator=self.aug_gen,
            epoch=epoch,
            total_steps=self.steps,
            start_step=skip,
            stop=self.pacer.out_of_time,
            show_progress=self.dist.is_main,
            on_step=on_step,
            on_update=self.ema.update if self.ema is not None else None,
        )
        stopped = result["stopped"] or self.pacer.out_of_time()
        if not result["stopped"]:
            self.epoch, self.step_in_epoch = epoch, 0
        row = {
            "epoch": epoch,
            "train_loss": all_mean(result["loss"], self.dist, self.device),
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": result["images"] * self.dist.world_size / result["seconds"],
            "elapsed_min": self.pacer.elapsed_min(),
        }
        last = self.epoch >= cfg.max_epochs or stopped
        if len(self.val_set) and (last or self.pacer.validation_due(epoch)):
            started = time.monotonic()
            row.update(self.validator.score(epoch, self.eval_net, self.train_model, self.loss_fn,
                                            self.ctx, averaged=self.ema is not None))  # fmt: skip
            self.pacer.validated(started)
        early = self._track_best(row)
        self.history.append(row)
        final = last or early  # last: the final epoch or the budget's end
        saving, plotting = self.pacer.saving, self.pacer.plotting
        if final or (epoch % cfg.save_every == 0 if cfg.save_every else saving.due()):
            saving.run(lambda: self._save("last.pt"))
        if self.dist.is_main:
            if final or plotting.due():
                plotting.run(
                    lambda: artifacts.write_history(self.run_dir, self.history, self.writer)
                )
            else:  # history.csv only
                artifacts.write_history(self.run_dir, self.history, self.writer, plot=False)
            log.info("%s", artifacts.format_row(row))
        if result["stopped"] or (stopped and self.epoch < cfg.max_epochs):
            log.info(
                "time budget of %.1f min reached at epoch %d, step %d: saved last.pt",
                cfg.time_budget,
                epoch,
                self.step_in_epoch or self.steps,
            )
        return stopped or early

    def _track_best(self, row: dict) -> bool:
        """Save best.pt on improvement; True when early stopping says stop."""
        cfg = self.cfg
        value = row.get(cfg.best_metric)
        if value is None:
            return False
        lower = "loss" in cfg.best_metric or "error" in cfg.best_metric
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(value)
        better = self.best_value is None or (
            value < self.best_value if lower else value > self.best_value
        )
        if better:
            self.best_value, self.best_epoch, self.bad_validations = value, row["epoch"], 0
            self._save("best.pt", full=False)
            return False
        self.bad_validations += 1
        return bool(cfg.early_stop) and self.bad_validations >= cfg.early_stop
