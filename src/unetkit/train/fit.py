"""fit(config) -> run folder: the epoch loop, validation, checkpoints, history, resume, DDP."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from ..config import TrainConfig
from ..data.dataset import SegmentationDataset
from ..data.fingerprint import choose_normalization, compute_fingerprint, describe
from ..data.layout import describe_dataset, describe_images
from ..data.transforms import Augmenter
from ..device import resolve_device, resolve_precision, resolve_workers
from ..errors import UnetkitError
from ..files import clean_stale_temps, write_text
from ..models.unet import UNet
from . import artifacts
from .distributed import DistInfo, all_max, all_mean, init_distributed, shutdown_distributed
from .ema import WeightAverage
from .loop import StepContext, train_one_epoch, validate, validate_with_predictor
from .losses import DistanceHeadLoss, RaysHeadLoss, build_loss
from .recipe import min_epoch_crops
from .recipe import plan as plan_recipe
from .resolve import (
    REGRESSION_PRESETS,
    class_weights,
    describe_split,
    network_classes,
    resolve_config,
    split_stems,
    validation_regions,
    weight_map_fn,
)
from .rundir import check_resumable, check_run_dir, discard_failed_start
from .setup import (
    build_optimizer,
    build_scheduler,
    epoch_batches,
)

log = logging.getLogger(__name__)

VALIDATION_WAIT = 4.0  # auto validation: train 4x as long as the last validation took
CHORE_WAIT = 50.0  # last.pt (save_every 0) and curves.png: at most ~2 % of the time each


class _Chore:
    """A recurring side job (writing ``last.pt``, drawing ``curves.png``) held to a share of
    the time: after a run that took ``s`` seconds the next is due ``wait * s`` seconds later
    (on a small model with short epochs, every epoch would cost a sixth of the budget)."""

    def __init__(self, wait: float) -> None:
        self.wait, self.next = wait, 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.next

    def run(self, job: Callable[[], None]) -> None:
        start = time.monotonic()
        job()
        end = time.monotonic()
        self.next = end + self.wait * (end - start)


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


def _object_scores(summary: dict | None) -> str:
    """``mean AP 0.512, AP@0.5 0.734, 12 merges``, or ``-``."""
    if not summary:
        return "-"
    return (f"mean AP {summary.get('map') or 0:.3f}, AP@0.5 {summary.get('ap_50') or 0:.3f}, "
            f"{summary.get('merges', 0)} merges")  # fmt: skip


class _EpochSampler:
    """The current epoch's batches as ``(epoch, index)`` keys of the training set (set before
    each epoch), so that one ``DataLoader`` and its loading processes serve every epoch and
    each sample still gets its epoch's crop."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


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
        regression = config.task == "regression" or (
            config.task == "auto" and config.preset in REGRESSION_PRESETS
        )
        self.info = (describe_images if regression else describe_dataset)(config.dataset)
        self.width_auto = config.preset == "auto" and config.model is None
        self.cfg = cfg = resolve_config(config, self.info)
        stored = (self.resume_state or {}).get("data") or {}
        if set(stored.get("train", [])) | set(stored.get("val", [])) == set(self.info.stems):
            # a resumed run keeps its split, however the split rule has changed since
            self.train_stems, self.val_stems = list(stored["train"]), list(stored["val"])
            boxes = stored.get("val_regions") or {}
            self.val_regions = {s: (int(b[0]), int(b[1]), int(b[2]), int(b[3]))
                                for s, b in boxes.items()}  # fmt: skip
        else:
            self.train_stems, self.val_stems = split_stems(self.info, cfg)
            self.val_regions = validation_regions(self.info, cfg) if not self.val_stems else {}
        self.split_reason = describe_split(
            self.info, cfg, self.train_stems, self.val_stems, self.val_regions
        )
        self.device = resolve_device(cfg.device, dist_info.local_rank)
        self.precision = resolve_precision(cfg.precision, self.device)
        # auto workers stay "auto" in the config: a run resumed on another machine decides anew
        self.workers = resolve_workers(cfg.workers, self.device)
        self.cfg = cfg = cfg.replace(precision=self.precision)  # record what "auto" chose
        assert cfg.model is not None  # resolve_config fills in the model and the classes
        if tuple(cfg.data.size) != (0, 0):  # a given size: checked before any image is read
            with torch.device("meta"):
                UNet(cfg.model).check_input(self._train_input_size())
        self._build_data()
        # every input is read and checked before the run folder is touched: the training
        # images by the fingerprint pass (which reads each one), the validation images here
        self._plan_from_fingerprint()
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
        return (h // s, w // s) if self.cfg.task == "regression" else (h, w)

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
        val_cfg = cfg.data.replace(resize="none") if cfg.data.resize == "random-crop" else cfg.data
        # held-out regions: the images themselves, each scored on its band only
        val_stems = [s for s in self.info.stems if s in self.val_regions] or self.val_stems
        self.val_set = SegmentationDataset(
            info, val_stems, val_cfg, train=False, regions=self.val_regions
        )
        self.sampler = _EpochSampler()
        self.loader: torch.utils.data.DataLoader | None = None  # built at the first epoch

    def _plan_from_fingerprint(self) -> None:
        """Measure the training images and resolve ``data.normalize: auto`` from them."""
        cfg = self.cfg
        k = 0 if cfg.task == "regression" else network_classes(cfg)
        samples = ((s, *self.train_set.raw(s)) for s in self.train_stems)
        self.fingerprint = compute_fingerprint(samples, k)
        data = cfg.data
        if data.normalize == "auto":
            if cfg.task == "regression":
                mode, why = "fixed", "image-to-image task: the images are their own targets"
            else:
                mode, why = choose_normalization(self.fingerprint)
            data = data.replace(normalize=mode)
            if mode == "dataset":
                pooled = self.fingerprint["pooled"]
                data = data.replace(mean=tuple(pooled["mean"]),
                                    std=tuple(max(v, 1e-3) for v in pooled["std"]))  # fmt: skip
            self.norm_reason = f"normalize {mode}: {why}"
        else:
            self.norm_reason = f"normalize {data.normalize} (as configured)"
        self.cfg, self.recipe_reason = plan_recipe(
            cfg.replace(data=data), self.fingerprint, self.device, self.width_auto
        )
        data = self.cfg.data
        self.train_set.config = data
        crops = self.train_set.plan_crops()  # DataConfig.sampling, now that the patch is known
        # a resumed run keeps its epoch, whatever length (budget, epochs) it is given now
        floor = min_epoch_crops(self.cfg, len(self.info.stems))
        if self.resume_state is not None:
            floor = int(self.resume_state.get("min_epoch_crops", 0))
        one_pass = len(self.train_set)
        self.min_epoch_crops = floor if one_pass < floor else 0  # recorded when applied
        if self.min_epoch_crops:  # the default length on a small set: longer epochs
            self.train_set.plan_crops(floor)
            batches = -(-one_pass // (self.cfg.batch_size * self.dist.world_size))
            epochs = self.cfg.max_epochs
            self.recipe_reason += (
                f"\nepoch {len(self.train_set)} crops, {len(self.train_set) // one_pass}x each "
                f"image's: a pass over the {len(crops)} images is {one_pass} crop(s), fewer "
                f"than {floor}; {epochs} epochs of {batches} step(s) would train only "
                f"{epochs * batches} steps"
            )
        if data.sampling == "area" and len(self.train_set) != len(crops):
            log.info("sampling area: %d crops per epoch from %d images (1 to %d per image)",
                     len(self.train_set), len(crops), max(crops.values()))  # fmt: skip
        n_global = self.cfg.batch_size * self.dist.world_size
        self.steps = cfg.steps_per_epoch or max(1, -(-len(self.train_set) // n_global))
        if cfg.task == "instance" and cfg.objects.min_size is None:
            areas = np.concatenate([np.zeros(0), *self.train_set.object_areas.values()])
            p10 = float(np.percentile(areas, 10)) if areas.size else 5.0
            self.cfg = self.cfg.replace(
                objects=cfg.objects.replace(min_size=max(1, round(p10 / 5)))
            )
            log.info("objects: min_size %d px (a fifth of the 10th percentile of %d training "
                     "objects' areas)", self.cfg.objects.min_size, areas.size)  # fmt: skip
        if cfg.task == "instance" and cfg.objects.head == "rays":
            self._plan_rays()
        self.train_set.config = data
        self.val_set.config = data.replace(resize="none") if data.resize == "random-crop" else data

    def _plan_rays(self) -> None:
        """The rays head's ``ray_scale`` when not given: the mean ray length over the training
        objects' pixels (the unit of the network's ray outputs), logged with its reason."""
        objects = self.cfg.objects
        total = sum(t for t, _ in self.train_set.ray_lengths.values())
        count = sum(n for _, n in self.train_set.ray_lengths.values())
        why = "as configured"
        if objects.ray_scale is None:
            scale = round(total / count, 2) if count and total > 0 else 1.0
            objects = objects.replace(ray_scale=scale)
            self.cfg = self.cfg.replace(objects=objects)
            why = f"the mean ray length over the {count // objects.n_rays} training object pixels"
        log.info("objects: rays head, %d rays (StarDist's default 32 unless --n-rays), ray "
                 "scale %.2f px (%s; the network predicts rays in that unit)",
                 objects.n_rays, objects.ray_scale, why)  # fmt: skip

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
        cw = class_weights(cfg, self.info)
        self.loss_fn = build_loss(
            cfg.loss,
            "multiclass" if cfg.task == "instance" else cfg.task,
            network_classes(cfg),
            self.info.ignore_index,
            cw.to(dev) if cw is not None else None,
        )
        objects = cfg.objects
        if cfg.task == "instance" and objects.head == "distance":
            self.loss_fn = DistanceHeadLoss(
                self.loss_fn, self.info.ignore_index, objects.distance_weight
            )
        elif cfg.task == "instance" and objects.head == "rays":
            assert objects.ray_scale is not None  # chosen by _plan_from_fingerprint
            self.loss_fn = RaysHeadLoss(
                self.loss_fn, self.info.ignore_index, objects.distance_weight,
                objects.rays_weight, objects.ray_scale,
            )  # fmt: skip
        self.optimizer = build_optimizer(
            cfg.optimizer, self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
            momentum=cfg.momentum, nesterov=cfg.nesterov,
        )  # fmt: skip
        self.budget_used = 0.0  # share of the time budget spent, agreed by all ranks
        self.scheduler = build_scheduler(
            cfg.schedule,
            self.optimizer,
            self.steps // cfg.accumulate or 1,
            epochs=cfg.max_epochs,
            warmup_epochs=cfg.warmup_epochs,
            best_metric=cfg.best_metric,
            budget_used=(lambda: self.budget_used) if cfg.time_budget > 0 else None,
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
        self._saving, self._plotting = _Chore(CHORE_WAIT), _Chore(CHORE_WAIT)
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
            self.loader = None  # its loading processes end with it

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
                self.workers,
                describe(self.fingerprint, self._network_class_names()),
                f"{self.norm_reason}\n{self.recipe_reason}\n{self.split_reason}",
                cfg.pretty(),
            )
        self.writer = artifacts.tensorboard_writer(
            self.run_dir, cfg.tensorboard and self.dist.is_main
        )
        self.start_time = time.monotonic()
        stopped = False
        while self.epoch < cfg.max_epochs and not stopped:
            stopped = self._run_epoch()
        if cfg.task == "instance" and cfg.objects.head == "rays" and self.dist.is_main:
            self._choose_rays_thresholds()
        if self.writer is not None:
            self.writer.close()
        return self.run_dir

    def _choose_rays_thresholds(self) -> None:
        """The rays head's ``prob_thresh`` / ``nms_thresh`` / ``min_score``: those with which
        best.pt's objects score best on the validation images, or bands
        (``unetkit.objects.thresholds``, as StarDist's ``optimize_thresholds``), logged and
        written into best.pt, last.pt and config.json."""
        from ..config import PredictConfig
        from ..data.instances import read_instances
        from ..infer.predict import Predictor
        from ..objects.thresholds import choose_star_thresholds

        best = self.run_dir / "best.pt"
        # whole validation images, or each image's held-out band (``val_regions``)
        boxes = {s: self.val_regions.get(s) for s in self.val_stems or self.val_regions}
        if not boxes or not best.is_file():
            return
        predictor = Predictor.from_checkpoint(
            best, PredictConfig(device=str(self.device), precision=self.precision)
        )

        def window(array: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
            """The last two axes of ``array`` inside ``box`` (all of it for None)."""
            return array if box is None else array[..., box[0] : box[1], box[2] : box[3]]

        samples = (  # the whole image predicted, as it will be, then scored in its band
            (window(predictor.predict_proba(self.val_set.raw(stem)[0]), box),
             window(read_instances(self.info.instance_files[stem]), box))
            for stem, box in boxes.items()
        )  # fmt: skip
        before = predictor.objects_config
        chosen, table = choose_star_thresholds(samples, before)
        key = (chosen.prob_thresh, chosen.nms_thresh, chosen.min_score)
        configured = (before.prob_thresh, before.nms_thresh, before.min_score)
        log.info("objects: prob_thresh %.2f, nms_thresh %.2f, min_score %.1f: the best DSB mean "
                 "AP on the %d validation %s, %s (at %.2f, %.2f, %.1f: %s)", *key, len(boxes),
                 "images" if self.val_stems else "bands", _object_scores(table[key]),
                 *configured, _object_scores(table.get(configured)))  # fmt: skip
        thresholds = dict(zip(("prob_thresh", "nms_thresh", "min_score"), key, strict=True))
        self.cfg = self.cfg.replace(objects=self.cfg.objects.replace(**thresholds))
        for name in ("best.pt", "last.pt"):
            path = self.run_dir / name
            if not path.is_file():
                continue
            ckpt = load_checkpoint(path)
            ckpt.extra["objects"] = {**ckpt.extra.get("objects", {}), **thresholds}
            stored = (ckpt.train_state or {}).get("config")
            if isinstance(stored, dict) and isinstance(stored.get("objects"), dict):
                stored["objects"].update(thresholds)  # what --resume reads
            save_checkpoint(ckpt, path)
        write_text(self.run_dir / "config.json", self.cfg.pretty() + "\n")

    def _out_of_time(self) -> bool:
        budget = self.cfg.time_budget
        if budget <= 0:
            return False
        used = (time.monotonic() - self.start_time) / (budget * 60)
        self.budget_used = all_max(used, self.dist, self.device)
        return self.budget_used >= 1.0

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
        order = list(
            epoch_batches(
                len(self.train_set),
                cfg.batch_size,
                self.steps,
                cfg.seed,
                epoch,
                self.dist.rank,
                self.dist.world_size,
            )
        )[skip:]
        self.sampler.batches = [[(epoch, i) for i in batch] for batch in order]
        if self.loader is None:  # one loader, and one set of loading processes, for the run
            self.loader = torch.utils.data.DataLoader(
                self.train_set,
                batch_sampler=self.sampler,
                num_workers=self.workers,
                persistent_workers=self.workers > 0,
                pin_memory=self.device.type == "cuda",
            )
        loader = self.loader

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
            stop=self._out_of_time,
            show_progress=self.dist.is_main,
            on_step=on_step,
            on_update=self.ema.update if self.ema is not None else None,
        )
        stopped = result["stopped"] or self._out_of_time()
        if not result["stopped"]:
            self.epoch, self.step_in_epoch = epoch, 0
        row = {
            "epoch": epoch,
            "train_loss": all_mean(result["loss"], self.dist, self.device),
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": result["images"] * self.dist.world_size / result["seconds"],
            "elapsed_min": (time.monotonic() - self.start_time) / 60,
        }
        last = self.epoch >= cfg.max_epochs or stopped
        if len(self.val_set) and (last or self._validation_due(epoch)):
            started = time.monotonic()
            row.update(self._validate(epoch))
            self.val_seconds = time.monotonic() - started
            self.last_val_end = time.monotonic()
        early = self._track_best(row)
        self.history.append(row)
        final = last or early  # last: the final epoch or the budget's end
        if final or (epoch % cfg.save_every == 0 if cfg.save_every else self._saving.due()):
            self._saving.run(lambda: self._save("last.pt"))
        if self.dist.is_main:
            if final or self._plotting.due():
                self._plotting.run(
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

    def _network_class_names(self) -> list[str]:
        extra = ["boundary"] if network_classes(self.cfg) > len(self.cfg.classes or ()) else []
        assert self.cfg.classes is not None  # set by resolve_config
        return list(self.cfg.classes) + extra

    def _predictor(self):
        """The weights being validated as an ``unetkit.infer.Predictor`` with default
        settings: the very code path of ``unetkit predict`` and ``evaluate``."""
        from ..card import ModelCard
        from ..config import PredictConfig
        from ..infer.backends import torch_network
        from ..infer.predict import Predictor

        cfg = self.cfg
        assert cfg.model is not None and cfg.classes is not None  # set by resolve_config
        info = ModelCard(
            model_config=cfg.model,
            classes=list(cfg.classes),
            palette=self.info.palette,
            preprocessing=cfg.data,
            task=cfg.task,
            ignore_index=self.info.ignore_index,
            objects=cfg.objects.to_dict(),
            source=str(self.run_dir),
        )
        network = torch_network(self.eval_net, info, self.device, self.precision)
        return Predictor(network, PredictConfig(device=str(self.device), precision=self.precision))

    def _validation_due(self, epoch: int) -> bool:
        """``val_every`` N: every N epochs. 0 (auto): the first epoch, then whenever training
        has run 4x as long as the last validation took (validation <= ~20 % of the time; on
        big validation images, validating every epoch would halve a time budget's training),
        agreed by all ranks."""
        if self.cfg.val_every:
            return epoch % self.cfg.val_every == 0
        last_end = getattr(self, "last_val_end", None)
        if last_end is None:
            return True
        waited = time.monotonic() - last_end
        due = waited >= VALIDATION_WAIT * self.val_seconds
        return all_max(float(due), self.dist, self.device) > 0

    def _validate(self, epoch: int) -> dict:
        cfg = self.cfg
        assert cfg.classes is not None  # set by resolve_config
        indices = list(range(len(self.val_set)))[self.dist.rank :: self.dist.world_size]
        panels = list(range(min(cfg.panels, len(self.val_set)))) if self.dist.is_main else []
        images = []

        def on_panel(i, item, pred):
            images.append(artifacts.panel_row(item, pred, self.info, cfg.data))

        if cfg.task == "regression":
            metrics = validate(
                self.eval_net if self.ema is not None else self.train_model,
                self.eval_net,
                self.loss_fn,
                self.val_set,
                self.ctx,
                len(cfg.classes),
                self.info.ignore_index,
                list(cfg.classes),
                indices=indices,
                panel_indices=panels,
                on_panel=on_panel,
            )
        else:
            self.train_model.eval()  # (its BatchNorm statistics are the ones being averaged)
            metrics = validate_with_predictor(
                self._predictor(),
                self.val_set,
                len(cfg.classes),
                self.info.ignore_index,
                list(cfg.classes),
                indices=indices,
                device=self.device,
                panel_indices=panels,
                on_panel=on_panel,
            )
            self.train_model.train()
        metrics["val_loss"] = all_mean(metrics["val_loss"], self.dist, self.device)
        if images and self.dist.is_main:
            artifacts.write_panels(self.run_dir / "panels" / f"epoch_{epoch:04d}.png", images)
        flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if "per_class" in metrics:
            for name, vals in metrics["per_class"].items():
                if vals.get("iou") is not None:
                    flat[f"iou_{name}"] = vals["iou"]
        return flat

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
