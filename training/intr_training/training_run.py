"""One `intr train` run: set up data, model and optimizer (fresh or resumed), then the epoch loop.

Determinism: everything random is seeded from --seed; epoch e shuffles with seed + e (the
sampler) and seeds its data-loading workers from a generator seeded with seed + e; the global
RNG states are saved with every epoch and restored on --resume, so a resumed single-process run
gives the same weights as an uninterrupted one.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from napari_intr import distributed, run_folder
from napari_intr.checkpoints import model_from_state, save_model
from napari_intr.collection.run_lock import RunLock
from napari_intr.collection.scan import keep_split, scan_collection, split_record
from napari_intr.devices import resolve_device
from napari_intr.image_files import is_out_of_memory
from napari_intr.model import IntrConfig
from napari_intr.model.backbone import folded_batch_norm
from napari_intr.recipes import (
    BACKBONE_ALONE_BATCH,
    BACKBONE_ALONE_LR,
    CLIP_MAX_NORM,
    WEIGHT_DECAY,
)

from . import schedules, train_settings
from .backbone_stage import train_backbone_alone
from .calibrate import calibrate_training_run
from .data import ImageFolderDataset, VariantDataset, collate
from .diagnosis import Watch
from .engine import evaluate, feature_options, options_for, precision_name, train_one_epoch
from .feature_cache import (
    BackboneFeatures,
    CachedVariants,
    FeatureCache,
    FeatureLoader,
    backbone_fingerprint,
    collate_pending,
)
from .initialization import freeze, initial_model, set_dropout
from .progress import Progress, make_progress
from .query_sampling import QuerySampler
from .transforms import Variant, eval_transform, fixed_variants, train_transform

SHOWN_SKIPPED = 5  # unreadable images named one by one before the rest are counted
# Resized training images are kept in memory (and no loader workers are started) up to this size.
KEEP_IMAGES_BYTES = 2 * 2**30

# Set by SIGTERM and checked after every step: the KeyboardInterrupt raised by the handler can
# land where Python swallows exceptions (e.g. an at-fork callback as DataLoader workers start).
STOP_REQUESTED = threading.Event()


def _raise_interrupt(signum, frame):
    STOP_REQUESTED.set()
    raise KeyboardInterrupt


def run_training(command_line: dict) -> int:
    """One `intr train` run from its command line (argparse's values, None where not given);
    returns the exit code (130: interrupted).

    Interruption (Ctrl-C, SIGTERM from the plugin's Cancel): the state of the last completed epoch
    is already on disk, so the run stops at once, mid-epoch if need be, drops the partial epoch;
    `--resume` repeats that epoch from its start, with the same batches."""
    progress = make_progress(command_line.get("progress"), distributed.from_environment().is_main)
    on_main_thread = threading.current_thread() is threading.main_thread()
    STOP_REQUESTED.clear()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if on_main_thread else None
    training = None
    lock = RunLock(Path(command_line["out"]).expanduser())
    try:
        try:
            if distributed.from_environment().is_main:  # the other ranks write into rank 0's folder
                lock.acquire()
            training = TrainingRun(command_line, progress)
            if lock.stale_message():
                training.setup_warnings.append(lock.stale_message())
            training.fit()
        except (RuntimeError, MemoryError) as error:
            message = out_of_memory_message(error, training)
            if message:
                raise RuntimeError(message) from error
            raise
        return 0
    except KeyboardInterrupt:
        if training is None:
            progress.interrupted(0, None, "interrupted before training started")
        else:
            training.report_interrupt()
        return 130
    except (ValueError, OSError, RuntimeError, ImportError) as error:
        progress.error(str(error))
        raise
    finally:
        lock.release()
        progress.close()
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
        distributed.cleanup()


def out_of_memory_message(error: BaseException, run: TrainingRun | None) -> str | None:
    if not is_out_of_memory(error):
        return None
    settings = ""
    if run is not None and hasattr(run, "config"):
        settings = f" with --batch-size {run.settings.batch_size} and --image-size {run.config.short_side}"
    return (f"out of memory{settings}: lower --batch-size (add --accumulate K to keep the effective "
            "batch size) or --image-size")


def default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def optimizer_for(model: torch.nn.Module, lr: float, lr_backbone: float) -> torch.optim.Optimizer:
    """DETR's AdamW: the backbone at its own learning rate; frozen parameters left out. Fused on
    the CPU (one kernel for all parameters): half the default's time there (21 ms less per step
    for resnet50 INTR's transformer, ~3 % of a cached step). On a GPU it is one of
    benchmarks/paper_scale.py's levers, not measured yet, so the default stays."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not n.startswith("backbone.")], "lr": lr},
              {"params": [p for n, p in named if n.startswith("backbone.")], "lr": lr_backbone}]
    fused = all(p.device.type == "cpu" and p.dtype == torch.float32 for _, p in named) or None
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=WEIGHT_DECAY, fused=fused)


class TrainingRun:
    """Its configuration is `self.settings` (train_settings.TrainSettings), resolved in `setup`."""

    def __init__(self, command_line: dict, progress: Progress):
        self.command_line, self.progress = command_line, progress
        self.out = Path(command_line["out"]).expanduser()
        self.epoch = 0  # completed epochs
        self.history: list[dict] = []
        self.best_val_acc, self.best_per_class = None, {}
        self.saved_rng = None
        self.watch = Watch()  # says when the run stalls (diagnosis.py)
        self.setup_warnings: list[str] = []  # reported after the start event
        self.setup()

    # -- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        command_line = self.command_line
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; give a folder for the run's outputs")
        saved = run_folder.load_state(self.out) if command_line.get("resume") else None
        if saved is None and (self.out / run_folder.STATE_FILE).exists():
            raise ValueError(f"{self.out} already holds a training run: add --resume to continue it, or "
                             "give another --out for a new run")
        self.dist, self.device = distributed.setup(resolve_device(command_line.get("device") or "auto"))
        if saved is not None:
            if "schedule" not in saved["args"]:
                raise ValueError(f"--resume: {self.out} was saved by an earlier napari-intr whose per-epoch "
                                 "learning-rate schedule cannot be continued exactly; start a new run (add --init "
                                 f"{self.out / run_folder.LAST_FILE} to keep its weights)")
            self.settings, warnings = train_settings.resumed(command_line, saved["args"], self.device.type)
            self.setup_warnings += warnings
            start = self.settings.saved()
        else:
            start = train_settings.start_values(command_line)
        collection = scan_collection(start["data"], start["val_split"], start["seed"], exclude=self.out)
        if saved is not None and "split" in saved:
            changed = keep_split(collection, saved["split"], bool(command_line.get("rescan")))
            if changed:
                self.setup_warnings.append(f"--resume: {changed}")
        elif command_line.get("rescan"):
            self.setup_warnings.append("--rescan has effect only with --resume (a new run scans DATA anyway)")
        self.class_names = collection.class_names
        if saved is not None and saved["class_names"] != self.class_names:
            raise ValueError(f"--resume: the classes in {start['data']} differ from the saved run's "
                             f"({run_folder.class_difference(saved['class_names'], self.class_names)}); "
                             "resume with the same data, or start a new run in another --out")
        run_folder.seed_everything(start["seed"])
        if saved is None:
            first = initial_model(start.get("init"), self.class_names, start.get("backbone"), start.get("image_size"),
                                  torch.Generator().manual_seed(start["seed"]), start.get("dropout"),
                                  start.get("backbone_weights"),
                                  start.get("encoder_window"), start.get("enc_layers"),
                                  start.get("null_keys"))
            model, self.init_description, init_warnings = first.model, first.description, first.warnings
            self.settings, warnings = train_settings.new_run(command_line, model.config.backbone,
                                                             self.dist.world_size)
            self.setup_warnings += warnings
            set_dropout(model, self.settings.dropout)
        else:
            # built on the meta device: every weight comes from the saved state
            model = model_from_state(IntrConfig.from_json(saved["config"]), self.class_names, saved["model"],
                                     self.out)
            self.init_description, init_warnings = f"resumed after epoch {saved['epoch']}", []
        settings = self.settings
        self.config = model.config
        self.frozen = freeze(model, settings.freeze)
        self.options = options_for(self.device, settings.batch_size * model.config.short_side ** 2, settings.precision)
        self.feature_options = feature_options(self.options, settings.precision)  # a frozen backbone's forward
        model.to(self.device)
        if self.options.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = self.build_optimizer()
        self.build_loaders(collection)
        self.schedule = schedules.plan(settings.schedule, settings.epochs,
                                       schedules.updates_per_epoch(len(self.train_loader), settings.accumulate),
                                       settings.warmup_epochs, settings.lr_drop)
        self.scheduler = schedules.scheduler(self.optimizer, self.schedule)
        if saved is not None:
            self.restore(saved)
        self.wrapped = DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None
        ) if self.dist.active else model
        self.collection = collection
        sampled = settings.sampled_queries
        self.query_sampler = None if sampled is None else QuerySampler(sampled, len(self.class_names),
                                                                       torch.Generator())
        self.setup_warnings += init_warnings + collection.warnings + self.skipped_messages(collection.skipped)

    def build_optimizer(self) -> torch.optim.Optimizer:
        return optimizer_for(self.model, self.settings.lr, self.settings.lr_backbone)

    def restore(self, saved: dict) -> None:
        planned = self.schedule.to_dict()
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])  # the saved Schedule's numbers come back too
        if self.schedule.to_dict() != planned:  # --epochs changed: plan the rest anew
            self.schedule.__dict__.update(planned)
            self.setup_warnings.append(f"the learning-rate schedule now spans {self.settings.epochs} epochs (it was planned "
                                       f"for {saved['args']['epochs']}); the rate continues from that plan")
        self.epoch, self.history = saved["epoch"], list(saved["history"])
        self.best_val_acc, self.best_per_class = saved["best_val_acc"], dict(saved["best_per_class"])
        self.saved_rng = saved["rng"]

    def build_loaders(self, collection) -> None:
        """DETR's random multi-scale transform; or fixed (short side, flip) variants (--augment flip,
        or a frozen backbone), kept in memory when they fit. A frozen backbone's features come
        from the cache, or are computed as the batches come, by its batch-norm-folded copy."""
        settings, rank, world, config = self.settings, self.dist.rank, self.dist.world_size, self.config
        fixed = settings.augment == "flip" or settings.freeze is not None
        self.variant_sets = []
        val_samples = collection.val[rank::world]  # a plain shard per rank: counts stay exact
        if not fixed:
            train_set = ImageFolderDataset(collection.train, train_transform(config, self.model.feature_stride))
            val_set = ImageFolderDataset(val_samples, eval_transform(config))
            keep = False
        else:
            variants = fixed_variants(config, self.model.feature_stride, settings.augment)
            sides = {variant.short_side for variant in variants}
            image_bytes = 4 * 3 * config.short_side * config.max_side  # the most one resized image takes
            keep = (settings.workers in (None, 0) and not settings.cache_features
                    and image_bytes * (len(collection.train) * len(sides) + len(val_samples)) <= KEEP_IMAGES_BYTES)
            train_set = VariantDataset(collection.train, variants, config.max_side, settings.seed, keep)
            val_set = VariantDataset(val_samples, [Variant(config.short_side, False)], config.max_side, settings.seed,
                                     keep)
            if settings.cache_features:
                fingerprint = backbone_fingerprint(self.model.backbone[0])  # hashes every weight: once
                train_set = CachedVariants(train_set, self.feature_cache("train", collection.train, variants,
                                                                         fingerprint))
                val_set = CachedVariants(val_set, self.feature_cache("val", val_samples, val_set.variants,
                                                                     fingerprint))
            self.variant_sets = [train_set, val_set]
        workers = settings.workers if settings.workers is not None else (
            0 if keep or settings.cache_features else default_workers())
        # DistributedSampler shuffles with seed + epoch; with one process it is just that shuffle.
        self.sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=settings.seed)
        self.loader_generator = torch.Generator()
        common = dict(batch_size=settings.batch_size, num_workers=workers,
                      collate_fn=collate_pending if settings.cache_features else collate,
                      pin_memory=self.device.type == "cuda", worker_init_fn=seed_worker,
                      generator=self.loader_generator)
        self.train_loader = DataLoader(train_set, sampler=self.sampler, **common)
        self.val_loader = DataLoader(val_set, shuffle=False, **common) if collection.val else None
        if settings.freeze is not None:  # the frozen backbone's features come with the batches
            backbone = folded_batch_norm(self.model.backbone[0])

            def features(loader, dataset):
                if settings.cache_features:
                    return FeatureLoader(loader, dataset.cache, backbone, self.feature_options)
                return BackboneFeatures(loader, backbone, self.feature_options)
            self.train_loader = features(self.train_loader, train_set)
            if self.val_loader is not None:
                self.val_loader = features(self.val_loader, val_set)

    def feature_cache(self, split: str, samples, variants, fingerprint: str) -> FeatureCache:
        """rank 0 writes the cache layout (keeping valid slots of an earlier one); the others open it.
        fingerprint: `backbone_fingerprint` of the model's backbone."""
        name = split if split == "train" else f"{split}-rank{self.dist.rank}"
        backbone = self.model.backbone
        arguments = (self.out, name, samples, variants, self.config.max_side, backbone[0], backbone.stride,
                     backbone.num_channels, precision_name(self.feature_options), fingerprint)
        if split == "train" and not self.dist.is_main:
            distributed.barrier()
            return FeatureCache.prepare(*arguments, create=False)[0]
        cache, _ = FeatureCache.prepare(*arguments)  # refuses a cache the disk cannot hold
        changed = cache.changes.line("images", changed_note="their features are computed again")
        if changed:
            self.setup_warnings.append(f"feature cache ({name}): {changed}")
        if split == "train" and self.dist.active:
            distributed.barrier()
        return cache

    @staticmethod
    def skipped_messages(skipped: list[str]) -> list[str]:
        shown = skipped[:SHOWN_SKIPPED]
        if len(skipped) > SHOWN_SKIPPED:
            shown.append(f"… and {len(skipped) - SHOWN_SKIPPED} more unreadable images skipped")
        return shown

    # -- the loop ------------------------------------------------------------------------------

    def fit(self) -> None:
        settings = self.settings
        self.progress.start(
            epochs=settings.epochs, steps_per_epoch=len(self.train_loader), classes=self.class_names,
            train_images=len(self.collection.train), val_images=len(self.collection.val),
            skipped_images=len(self.collection.skipped), out=str(self.out), first_epoch=self.epoch + 1,
            init=self.init_description, precision=precision_name(self.options),
            feature_precision=precision_name(self.feature_options) if settings.freeze is not None else None,
            processes=self.dist.world_size, batch_size=settings.batch_size, accumulate=settings.accumulate)
        for message in self.setup_warnings:
            self.progress.warning(message)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            run_folder.write_classes(self.out, self.class_names)
        if self.saved_rng is not None:
            run_folder.restore_rng_state(self.saved_rng)
        epoch_seconds = []
        if self.epoch == 0 and settings.backbone_epochs:
            epoch_seconds.append(self.backbone_alone())
        for epoch in range(self.epoch + 1, settings.epochs + 1):
            started = time.monotonic()
            self.sampler.set_epoch(epoch)
            for dataset in self.variant_sets:
                dataset.set_epoch(epoch)
            self.loader_generator.manual_seed(settings.seed + epoch)
            if self.query_sampler is not None:  # random negatives: seeded per epoch and rank (resumable)
                self.query_sampler.generator.manual_seed((settings.seed + epoch) * 1009 + self.dist.rank)
            on_step = self._step_reporter(epoch, started, epoch_seconds)
            result = train_one_epoch(self.wrapped, self.train_loader, self.optimizer, self.options, epoch=epoch,
                                     accumulate=settings.accumulate, max_norm=CLIP_MAX_NORM, frozen=self.frozen,
                                     sampler=self.query_sampler, scheduler=self.scheduler, on_step=on_step)
            if result.images == 0:  # nothing learned: saving would write a random model as "trained"
                raise ValueError(f"none of the {len(self.collection.train)} training images in {settings.data} could "
                                 f"be used in epoch {epoch} (the reasons are above); nothing was saved for this "
                                 "epoch. Check the files (truncated or damaged images?) and run again")
            if result.skipped:
                self.progress.warning(f"epoch {epoch}: {result.skipped} images could not be decoded and were "
                                      "skipped (see the messages above)")
            # Sampled-query runs validate with a shortlist of the same size: cost independent of C too.
            evaluation = evaluate(self.model, self.val_loader, self.options, len(self.class_names),
                                  shortlist=settings.sampled_queries) \
                if self.val_loader is not None else None
            seconds = time.monotonic() - started
            epoch_seconds.append(seconds)
            self.end_epoch(epoch, result, evaluation, result.lr, seconds)
        distributed.barrier()
        final = self.watch.final()
        calibration = self.calibrate() if self.dist.is_main else None
        self.progress.done(best_val_acc=self.best_val_acc, model=str(self.out / run_folder.MODEL_FILE),
                           per_class_accuracy=self.best_per_class, calibration=calibration,
                           train_seconds=round(sum(epoch_seconds), 3),
                           diagnosis=None if final is None else final.as_event())

    def backbone_alone(self) -> float:
        """A new run's first stage (--backbone-epochs): the backbone alone as a pooled classifier
        (backbone_stage.py). Its loader epochs are keyed apart from INTR's, so that INTR's epochs
        shuffle as in a run without it. Returns its seconds."""
        settings, started = self.settings, time.monotonic()
        effective = self.dist.world_size * settings.batch_size
        lr = BACKBONE_ALONE_LR * (effective / BACKBONE_ALONE_BATCH) ** 0.5

        def before_epoch(epoch: int) -> None:
            key = BACKBONE_EPOCH_KEY + epoch
            self.sampler.set_epoch(key)
            for dataset in self.variant_sets:
                dataset.set_epoch(key)
            self.loader_generator.manual_seed(settings.seed + key)

        backbone = self.model.backbone[0]
        train_backbone_alone(backbone, self.model.backbone.num_channels, len(self.class_names), self.train_loader,
                             self.val_loader, settings.backbone_epochs, lr, self.options,
                             torch.Generator().manual_seed(settings.seed + BACKBONE_EPOCH_KEY),
                             distributed=self.dist.active, before_epoch=before_epoch,
                             on_epoch=self.progress.backbone_epoch)
        return time.monotonic() - started

    def calibrate(self) -> dict:
        """The open-set threshold and prediction sets of the kept model, from the validation
        images, written into model.safetensors (napari_intr.calibration)."""
        if not self.collection.val:
            result = {"calibrated": False, "reason": "no validation images: the model is not calibrated; run "
                      "intr calibrate --model MODEL --data IMAGES with images of its species it was not trained on"}
        else:
            result = calibrate_training_run(self.out / run_folder.MODEL_FILE, self.collection, self.device)
        if not result["calibrated"]:
            self.progress.warning(f"not calibrated: {result['reason']}")
        return result

    def _step_reporter(self, epoch: int, started: float, epoch_seconds: list[float]):
        """on_step for train_one_epoch: stops at once on SIGTERM, else reports progress and the
        time left (this epoch's pace; later epochs at the mean epoch time so far)."""
        remaining_epochs = self.settings.epochs - epoch

        def on_step(step, steps, loss, accuracy):
            if STOP_REQUESTED.is_set():
                raise KeyboardInterrupt
            per_step = (time.monotonic() - started) / step
            per_epoch = np.mean(epoch_seconds) if epoch_seconds else per_step * steps
            self.progress.step(epoch, step, steps, loss, accuracy, self.optimizer.param_groups[0]["lr"],
                               per_step * (steps - step) + per_epoch * remaining_epochs)

        return on_step

    def end_epoch(self, epoch, result, evaluation, lr, seconds) -> None:
        val_acc = evaluation.accuracy if evaluation is not None else None
        per_class = dict(zip(self.class_names, evaluation.per_class_accuracy())) if evaluation else {}
        # Without validation images every epoch is "best": model.safetensors is the latest one.
        improved = val_acc is None or self.best_val_acc is None or val_acc > self.best_val_acc
        if improved:
            self.best_val_acc, self.best_per_class = val_acc, per_class
        record = {"epoch": epoch, "loss": result.loss, "train_acc": result.accuracy, "val_acc": val_acc,
                  "lr": lr, "seconds": round(seconds, 3)}
        self.history.append(record)
        if self.dist.is_main:
            self.save(epoch, improved)
        self.epoch = epoch
        self.progress.epoch(**record, best_val_acc=self.best_val_acc)
        found = self.watch.update(self.history, None if evaluation is None else evaluation.confusion,
                                  self.class_names)
        if found is not None:
            self.progress.diagnosis(**found.as_event())

    def save(self, epoch: int, improved: bool) -> None:
        """Metrics, weights, then the state that --resume reads: each file atomic, the state last."""
        provenance = dict(data=str(Path(self.settings.data).expanduser().resolve()), epochs=epoch,
                          seed=self.settings.seed, command=shlex.join(sys.argv), init=self.init_description)
        run_folder.write_metrics(self.out, self.history)
        save_model(self.model, self.out / run_folder.LAST_FILE, **provenance)
        if improved:
            save_model(self.model, self.out / run_folder.MODEL_FILE, **provenance, best_val_acc=self.best_val_acc,
                       per_class_accuracy=self.best_per_class)
        run_folder.save_state(self.out, {
            "epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "best_val_acc": self.best_val_acc,
            "best_per_class": self.best_per_class, "class_names": self.class_names,
            "config": self.config.to_json(), "history": self.history, "split": split_record(self.collection),
            "args": self.settings.saved(),
        })

    def report_interrupt(self) -> None:
        path = self.out / run_folder.STATE_FILE
        if self.epoch:
            message = (f"interrupted; epoch {self.epoch} of {self.settings.epochs} is saved in {self.out}. Run the same "
                       "command with --resume to continue")
            self.progress.interrupted(self.epoch, str(path), message)
        else:
            self.progress.interrupted(0, None, "interrupted before the first epoch finished; nothing to resume")


BACKBONE_EPOCH_KEY = 1_000_000  # the backbone stage's epochs seed the loader as epochs 1_000_001, …


def seed_worker(worker_id: int) -> None:
    """DataLoader seeds torch and random in each worker; numpy too, for transforms that use it."""
    np.random.seed(torch.initial_seed() % 2**32)
