"""One `intr train` run: set up data, model and optimizer (fresh or resumed), then the epoch loop.

Determinism: everything random is seeded from --seed; epoch e shuffles with seed + e (the
sampler) and seeds its data-loading workers from a generator seeded with seed + e; the global
RNG states are saved with every epoch and restored on --resume, so a resumed single-process run
gives the same weights as an uninterrupted one.
"""
from __future__ import annotations

import argparse
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

from napari_intr.checkpoints import model_from_state, save_model
from napari_intr.devices import resolve_device
from napari_intr.model import IntrConfig
from napari_intr.model.backbone import folded_batch_norm

from . import distributed, schedules, state
from .data import ImageFolderDataset, VariantDataset, collate, scan_collection
from .diagnosis import Watch
from .engine import evaluate, options_for, precision_name, train_one_epoch
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
from .recipes import (
    CLIP_MAX_NORM,
    PAPER,
    PAPER_START,
    RECIPES,
    RUNTIME_ARGUMENTS,
    STEP_DROP_SHARE,
    WEIGHT_DECAY,
)
from .run_lock import RunLock
from .sampling import QuerySampler
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


def run_training(args: argparse.Namespace) -> int:
    """One `intr train` run from its parsed arguments; returns the exit code (130: interrupted).

    Interruption (Ctrl-C, SIGTERM from the plugin's Cancel): the state of the last completed epoch
    is already on disk, so the run stops at once, mid-epoch if need be, drops the partial epoch;
    `--resume` repeats that epoch from its start, with the same batches."""
    progress = make_progress(args.progress, distributed.from_environment().is_main)
    on_main_thread = threading.current_thread() is threading.main_thread()
    STOP_REQUESTED.clear()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if on_main_thread else None
    training = None
    lock = RunLock(Path(args.out).expanduser())
    try:
        try:
            if distributed.from_environment().is_main:  # the other ranks write into rank 0's folder
                lock.acquire()
            training = TrainingRun(args, progress)
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


# How torch (CUDA, MPS, the CPU allocator) and Python word running out of memory.
OUT_OF_MEMORY_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


def out_of_memory_message(error: BaseException, run: TrainingRun | None) -> str | None:
    text = str(error).lower()
    if not (isinstance(error, (torch.OutOfMemoryError, MemoryError)) or any(w in text for w in OUT_OF_MEMORY_WORDS)):
        return None
    settings = ""
    if run is not None and hasattr(run, "config"):
        settings = f" with --batch-size {run.args.batch_size} and --image-size {run.config.short_side}"
    return (f"out of memory{settings}: lower --batch-size (add --accumulate K to keep the effective "
            "batch size) or --image-size")


def with_defaults(args: argparse.Namespace, defaults: dict) -> argparse.Namespace:
    values = vars(args).copy()
    values.update({name: value for name, value in defaults.items() if values.get(name) is None})
    for name in ("epochs", "batch_size", "accumulate", "lr_drop"):
        if values.get(name) is not None and values[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {values[name]}")
    if values.get("dropout") is not None and not 0 <= values["dropout"] < 1:
        raise ValueError(f"--dropout must be at least 0 and below 1, got {values['dropout']}")
    if values.get("warmup_epochs") is not None and values["warmup_epochs"] < 0:
        raise ValueError(f"--warmup-epochs must be 0 or more, got {values['warmup_epochs']}")
    return argparse.Namespace(**values)


def general_defaults() -> dict:
    return {"seed": 0, "val_split": 0.1, "accumulate": 1, "precision": "auto"}


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
    def __init__(self, args: argparse.Namespace, progress: Progress):
        self.args, self.progress = args, progress
        self.out = Path(args.out).expanduser()
        self.epoch = 0  # completed epochs
        self.history: list[dict] = []
        self.best_val_acc, self.best_per_class = None, {}
        self.saved_rng = None
        self.watch = Watch()  # says when the run stalls (diagnosis.py)
        self.setup_warnings: list[str] = []  # reported after the start event
        self.setup()

    # -- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        args = self.args
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; give a folder for the run's outputs")
        saved = state.load_state(self.out) if args.resume else None
        if saved is None and (self.out / state.STATE_FILE).exists():
            raise ValueError(f"{self.out} already holds a training run: add --resume to continue it, or "
                             "give another --out for a new run")
        self.dist, self.device = distributed.setup(resolve_device(args.device))
        if saved is not None:
            if "schedule" not in saved["args"]:
                raise ValueError(f"--resume: {self.out} was saved by an earlier napari-intr whose per-epoch "
                                 "learning-rate schedule cannot be continued exactly; start a new run (add --init "
                                 f"{self.out / state.LAST_FILE} to keep its weights)")
            self.args = args = self.resumed_arguments(args, saved["args"])
        else:
            self.args = args = with_defaults(args, general_defaults())
            if args.recipe == "paper":
                self.args = args = with_defaults(args, PAPER_START)
        collection = scan_collection(args.data, args.val_split, args.seed)
        self.class_names = collection.class_names
        if saved is not None and saved["class_names"] != self.class_names:
            raise ValueError(f"--resume: the classes in {args.data} differ from the saved run's "
                             f"({state.class_difference(saved['class_names'], self.class_names)}); "
                             "resume with the same data, or start a new run in another --out")
        state.seed_everything(args.seed)
        if saved is None:
            start = initial_model(args.init, self.class_names, args.backbone, args.image_size,
                                  torch.Generator().manual_seed(args.seed), getattr(args, "dropout", None))
            model, self.init_description, init_warnings = start.model, start.description, start.warnings
            self.args = args = self.recipe_arguments(args, model.config.backbone)
            set_dropout(model, args.dropout)
        else:
            # built on the meta device: every weight comes from the saved state
            model = model_from_state(IntrConfig.from_json(saved["config"]), self.class_names, saved["model"],
                                     self.out)
            self.init_description, init_warnings = f"resumed after epoch {saved['epoch']}", []
        self.config = model.config
        self.frozen = freeze(model, args.freeze)
        self.options = options_for(self.device, args.batch_size * model.config.short_side ** 2, args.precision)
        model.to(self.device)
        if self.options.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = self.build_optimizer()
        self.build_loaders(collection)
        self.schedule = schedules.plan(args.schedule, args.epochs,
                                       schedules.updates_per_epoch(len(self.train_loader), args.accumulate),
                                       args.warmup_epochs, args.lr_drop)
        self.scheduler = schedules.scheduler(self.optimizer, self.schedule)
        if saved is not None:
            self.restore(saved)
        self.wrapped = DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None
        ) if self.dist.active else model
        self.collection = collection
        sampled = getattr(args, "sampled_queries", None)
        self.query_sampler = None if sampled is None else QuerySampler(sampled, len(self.class_names),
                                                                       torch.Generator())
        self.setup_warnings += init_warnings + collection.warnings + self.skipped_messages(collection.skipped)

    def resumed_arguments(self, args, saved_args: dict) -> argparse.Namespace:
        """The saved run's settings, except what may change between sessions (RUNTIME_ARGUMENTS)."""
        values = dict(saved_args)
        # Runs saved before --precision trained in fp32 on a CPU and "auto" on CUDA: continue alike.
        values.setdefault("precision", "auto" if self.device.type == "cuda" else "fp32")
        for name in RUNTIME_ARGUMENTS:
            if getattr(args, name) is not None:
                values[name] = getattr(args, name)
        for name, value in vars(args).items():
            if name not in RUNTIME_ARGUMENTS and value is not None and value != values.get(name):
                self.setup_warnings.append(f"--{name.replace('_', '-')} {value} ignored: --resume continues with the "
                                      f"saved run's setting ({values.get(name)})")
        return argparse.Namespace(**values)

    def recipe_arguments(self, args, backbone: str) -> argparse.Namespace:
        """Fill what the command line left out from the recipe; scale its learning rates to the
        effective batch (square root of effective / recipe batch: AdamW's rule of thumb)."""
        recipe = PAPER if args.recipe == "paper" else RECIPES[backbone]
        given = {name for name in ("lr", "lr_backbone") if getattr(args, name) is not None}
        args = with_defaults(args, recipe)
        effective = self.dist.world_size * args.batch_size * args.accumulate
        scale = (effective / recipe["batch_size"]) ** 0.5
        for name in {"lr", "lr_backbone"} - given:
            setattr(args, name, recipe[name] * scale)
        if args.schedule == "step" and args.lr_drop is None:
            args.lr_drop = max(1, round(args.epochs * STEP_DROP_SHARE))
        if args.schedule == "step" and args.lr_drop >= args.epochs:
            self.setup_warnings.append(f"--lr-drop {args.lr_drop} is not before the last epoch ({args.epochs}): the "
                                       "learning rate never drops")
        if args.schedule != "step" and args.lr_drop is not None and "lr_drop" not in recipe:
            self.setup_warnings.append(f"--lr-drop {args.lr_drop} ignored: it applies to --schedule step only")
        frozen = args.freeze is not None
        if args.cache_features and not frozen:
            raise ValueError("--cache-features needs a frozen backbone: add --freeze backbone (or encoder)")
        args.cache_features = frozen if args.cache_features is None else args.cache_features
        return args

    def build_optimizer(self) -> torch.optim.Optimizer:
        return optimizer_for(self.model, self.args.lr, self.args.lr_backbone)

    def restore(self, saved: dict) -> None:
        planned = self.schedule.to_dict()
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])  # the saved Schedule's numbers come back too
        if self.schedule.to_dict() != planned:  # --epochs changed: plan the rest anew
            self.schedule.__dict__.update(planned)
            self.setup_warnings.append(f"the learning-rate schedule now spans {self.args.epochs} epochs (it was planned "
                                       f"for {saved['args']['epochs']}); the rate continues from that plan")
        self.epoch, self.history = saved["epoch"], list(saved["history"])
        self.best_val_acc, self.best_per_class = saved["best_val_acc"], dict(saved["best_per_class"])
        self.saved_rng = saved["rng"]

    def build_loaders(self, collection) -> None:
        """DETR's random multi-scale transform; or fixed (short side, flip) variants (--augment flip,
        or a frozen backbone), kept in memory when they fit. A frozen backbone's features come
        from the cache, or are computed as the batches come, by its batch-norm-folded copy."""
        args, rank, world, config = self.args, self.dist.rank, self.dist.world_size, self.config
        fixed = args.augment == "flip" or args.freeze is not None
        self.variant_sets = []
        val_samples = collection.val[rank::world]  # a plain shard per rank: counts stay exact
        if not fixed:
            train_set = ImageFolderDataset(collection.train, train_transform(config, self.model.feature_stride))
            val_set = ImageFolderDataset(val_samples, eval_transform(config))
            keep = False
        else:
            variants = fixed_variants(config, self.model.feature_stride, args.augment)
            sides = {variant.short_side for variant in variants}
            image_bytes = 4 * 3 * config.short_side * config.max_side  # the most one resized image takes
            keep = (args.workers in (None, 0) and not args.cache_features
                    and image_bytes * (len(collection.train) * len(sides) + len(val_samples)) <= KEEP_IMAGES_BYTES)
            train_set = VariantDataset(collection.train, variants, config.max_side, args.seed, keep)
            val_set = VariantDataset(val_samples, [Variant(config.short_side, False)], config.max_side, args.seed,
                                     keep)
            if args.cache_features:
                fingerprint = backbone_fingerprint(self.model.backbone[0])  # hashes every weight: once
                train_set = CachedVariants(train_set, self.feature_cache("train", collection.train, variants,
                                                                         fingerprint))
                val_set = CachedVariants(val_set, self.feature_cache("val", val_samples, val_set.variants,
                                                                     fingerprint))
            self.variant_sets = [train_set, val_set]
        workers = args.workers if args.workers is not None else (
            0 if keep or args.cache_features else default_workers())
        # DistributedSampler shuffles with seed + epoch; with one process it is just that shuffle.
        self.sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        self.loader_generator = torch.Generator()
        common = dict(batch_size=args.batch_size, num_workers=workers,
                      collate_fn=collate_pending if args.cache_features else collate,
                      pin_memory=self.device.type == "cuda", worker_init_fn=seed_worker,
                      generator=self.loader_generator)
        self.train_loader = DataLoader(train_set, sampler=self.sampler, **common)
        self.val_loader = DataLoader(val_set, shuffle=False, **common) if collection.val else None
        if args.freeze is not None:  # the frozen backbone's features come with the batches
            backbone = folded_batch_norm(self.model.backbone[0])

            def features(loader, dataset):
                if args.cache_features:
                    return FeatureLoader(loader, dataset.cache, backbone, self.options)
                return BackboneFeatures(loader, backbone, self.options)
            self.train_loader = features(self.train_loader, train_set)
            if self.val_loader is not None:
                self.val_loader = features(self.val_loader, val_set)

    def feature_cache(self, split: str, samples, variants, fingerprint: str) -> FeatureCache:
        """rank 0 writes the cache layout (keeping valid slots of an earlier one); the others open it.
        fingerprint: `backbone_fingerprint` of the model's backbone."""
        name = split if split == "train" else f"{split}-rank{self.dist.rank}"
        backbone = self.model.backbone
        arguments = (self.out, name, samples, variants, self.config.max_side, backbone[0], backbone.stride,
                     backbone.num_channels, precision_name(self.options), fingerprint)
        if split == "train" and not self.dist.is_main:
            distributed.barrier()
            return FeatureCache.prepare(*arguments, create=False)[0]
        cache, _ = FeatureCache.prepare(*arguments)  # refuses a cache the disk cannot hold
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
        args = self.args
        self.progress.start(
            epochs=args.epochs, steps_per_epoch=len(self.train_loader), classes=self.class_names,
            train_images=len(self.collection.train), val_images=len(self.collection.val),
            skipped_images=len(self.collection.skipped), out=str(self.out), first_epoch=self.epoch + 1,
            init=self.init_description, precision=precision_name(self.options))
        for message in self.setup_warnings:
            self.progress.warning(message)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            state.write_classes(self.out, self.class_names)
        if self.saved_rng is not None:
            state.restore_rng_state(self.saved_rng)
        epoch_seconds = []
        for epoch in range(self.epoch + 1, args.epochs + 1):
            started = time.monotonic()
            self.sampler.set_epoch(epoch)
            for dataset in self.variant_sets:
                dataset.set_epoch(epoch)
            self.loader_generator.manual_seed(args.seed + epoch)
            if self.query_sampler is not None:  # random negatives: seeded per epoch and rank (resumable)
                self.query_sampler.generator.manual_seed((args.seed + epoch) * 1009 + self.dist.rank)
            on_step = self._step_reporter(epoch, started, epoch_seconds)
            result = train_one_epoch(self.wrapped, self.train_loader, self.optimizer, self.options, epoch=epoch,
                                     accumulate=args.accumulate, max_norm=CLIP_MAX_NORM, frozen=self.frozen,
                                     sampler=self.query_sampler, scheduler=self.scheduler, on_step=on_step)
            if result.images == 0:  # nothing learned: saving would write a random model as "trained"
                raise ValueError(f"none of the {len(self.collection.train)} training images in {args.data} could "
                                 f"be used in epoch {epoch} (the reasons are above); nothing was saved for this "
                                 "epoch. Check the files (truncated or damaged images?) and run again")
            if result.skipped:
                self.progress.warning(f"epoch {epoch}: {result.skipped} images could not be decoded and were "
                                      "skipped (see the messages above)")
            # Sampled-query runs validate with a shortlist of the same size: cost independent of C too.
            evaluation = evaluate(self.model, self.val_loader, self.options, len(self.class_names),
                                  shortlist=getattr(args, "sampled_queries", None)) \
                if self.val_loader is not None else None
            seconds = time.monotonic() - started
            epoch_seconds.append(seconds)
            self.end_epoch(epoch, result, evaluation, result.lr, seconds)
        distributed.barrier()
        final = self.watch.final()
        self.progress.done(best_val_acc=self.best_val_acc, model=str(self.out / state.MODEL_FILE),
                           per_class_accuracy=self.best_per_class,
                           diagnosis=None if final is None else final.as_event())

    def _step_reporter(self, epoch: int, started: float, epoch_seconds: list[float]):
        """on_step for train_one_epoch: stops at once on SIGTERM, else reports progress and the
        time left (this epoch's pace; later epochs at the mean epoch time so far)."""
        remaining_epochs = self.args.epochs - epoch

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
        provenance = dict(data=str(Path(self.args.data).expanduser().resolve()), epochs=epoch,
                          seed=self.args.seed, command=shlex.join(sys.argv), init=self.init_description)
        state.write_metrics(self.out, self.history)
        save_model(self.model, self.out / state.LAST_FILE, **provenance)
        if improved:
            save_model(self.model, self.out / state.MODEL_FILE, **provenance, best_val_acc=self.best_val_acc,
                       per_class_accuracy=self.best_per_class)
        state.save_state(self.out, {
            "epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "best_val_acc": self.best_val_acc,
            "best_per_class": self.best_per_class, "class_names": self.class_names,
            "config": self.config.to_json(), "history": self.history,
            "args": {k: v for k, v in vars(self.args).items() if isinstance(v, (str, int, float, bool, type(None)))},
        })

    def report_interrupt(self) -> None:
        path = self.out / state.STATE_FILE
        if self.epoch:
            message = (f"interrupted; epoch {self.epoch} of {self.args.epochs} is saved in {self.out}. Run the same "
                       "command with --resume to continue")
            self.progress.interrupted(self.epoch, str(path), message)
        else:
            self.progress.interrupted(0, None, "interrupted before the first epoch finished; nothing to resume")


def seed_worker(worker_id: int) -> None:
    """DataLoader seeds torch and random in each worker; numpy too, for transforms that use it."""
    np.random.seed(torch.initial_seed() % 2**32)
