"""Algorithm 1: the two training stages.

Stage 1 (:func:`train_stage1`) fine-tunes the GRN on identity classification
(eq. 4) while the MN and LAN stay fixed. Stage 2 (:func:`train_stage2`)
freezes the GRN (no gradients, BatchNorm in eval mode so its statistics do
not move) and trains the MN and LAN with cross-entropy plus the ranking loss
(eq. 4 + eq. 5).

Both stages write ``<stage>.partial.pt`` every ``checkpoint_every`` epochs and
the final ``grn.pt`` / ``fmn.pt`` at the end, each atomically. A run that is
killed and started again resumes from the partial checkpoint and, because
each epoch's batch order and augmentation are seeded by (seed, epoch), ends
with the same weights as an uninterrupted run. Per-epoch metrics go to
``stage1_metrics.jsonl`` / ``stage2_metrics.jsonl``.

The re-ID options of :class:`TrainConfig` (label smoothing, the triplet loss,
P x K batches, random erasing, BNNeck, warmup, cosine, AdamW) apply to both
stages and are off by default; with them off a stage runs exactly the code
path it ran before they existed.

On CUDA: bf16 autocast, channels_last, data already on the GPU, and no
host-device synchronisation inside the step loop. Under ``torchrun`` the
model is wrapped in DistributedDataParallel and each rank trains on its shard.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from fmn_core.data.loading import CachedBatches, ImageCache
from fmn_core.data.schema import label_map as table_label_map
from fmn_core.data.schema import num_train_identities
from fmn_core.engine.checkpoint import CheckpointError, build_model, load_checkpoint, save_checkpoint
from fmn_core.engine.config import TrainConfig
from fmn_core.engine.distributed import DistContext, all_reduce_sum, barrier, init_distributed
from fmn_core.engine.out_lock import training_output
from fmn_core.engine.progress import DeviceMeter, EpochProgress, write_metrics_log
from fmn_core.engine.recipes import config_file, save_config
from fmn_core.losses import batch_hard_triplet_loss, identity_loss, ranking_loss
from fmn_core.models import FeatureMaskNetwork
from fmn_core.models.backbone import prefers_channels_last
from fmn_core.models.mixing import mask_diagnostics
from fmn_core.utils.device import resolve_device
from fmn_core.utils.errors import FMNInputError
from fmn_core.utils.threads import configure_cpu_threads


class TrainingDivergedError(FMNInputError, RuntimeError):
    """The loss became NaN or infinite: no checkpoint is written for the broken epoch."""

log = logging.getLogger(__name__)

STAGE_FILES = {1: "grn.pt", 2: "fmn.pt"}
#: config fields that may change between a run and its resumption without changing the result
RUNTIME_FIELDS = {"device", "decode_workers", "checkpoint_every"}

EpochCallback = Callable[[int, int, dict], None]


@dataclass
class TrainResult:
    """What a stage produced and how it went."""

    checkpoint: Path
    stage: int
    epochs: int
    history: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0
    images_per_second: float = 0.0
    resumed_from_epoch: int = 0
    device: str = "cpu"
    diagnostics: dict = field(default_factory=dict)
    #: whether this process wrote the final checkpoint (under torchrun: rank 0 alone)
    wrote_checkpoint: bool = False
    #: under torchrun, per rank: its host and whether it wrote the checkpoint (filled in by the launcher's entry point)
    ranks: list[dict] = field(default_factory=list)
    #: CPU intra-op threads the stage trained with (FMN_THREADS); None on an accelerator
    threads: int | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


@dataclass
class _Runtime:
    context: DistContext
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    #: CPU intra-op threads (FMN_THREADS); None on an accelerator
    threads: int | None = None


def _runtime(config: TrainConfig) -> _Runtime:
    context = init_distributed(config.device)
    device = resolve_device(config.device, local_rank=context.local_rank)
    amp = config.amp if config.amp != "auto" else ("bf16" if device.type == "cuda" else "none")
    if amp == "fp16" and device.type == "cpu":
        raise FMNInputError("amp=fp16 on the CPU: PyTorch has no fast float16 training kernels there, so a step "
                            "takes many times longer than in float32; use --set amp=none, or amp=auto, which "
                            "chooses float32 on the CPU and bf16 on a CUDA GPU")
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    channels_last = prefers_channels_last(config.arch, device) if config.channels_last is None else config.channels_last
    log.info("precision: %s (amp=%s)", amp if amp != "none" else "float32", config.amp)
    threads = None
    if device.type == "cpu":
        threads = configure_cpu_threads()
        log.info("training on the CPU with %d threads (FMN_THREADS; runs are bit-identical only at one count)",
                 threads)
    return _Runtime(context, device, amp_dtype, channels_last, threads)


def _train_split(table: pd.DataFrame) -> tuple[list[str], list[int], dict[int, int], str]:
    train = table[table["split"] == "train"]
    if train.empty:
        raise FMNInputError("the split table has no train rows: nothing to learn identities from")
    paths, labels = train["path"].tolist(), train["label"].astype(int).tolist()
    digest = hashlib.sha1("\n".join(f"{p}\t{lab}" for p, lab in zip(paths, labels, strict=True)).encode())
    return paths, labels, table_label_map(table), digest.hexdigest()


def _comparable(config: dict) -> dict:
    """A config for the resume check; fields a checkpoint predates take their defaults (all off, as it trained)."""
    return {k: v for k, v in {**_DEFAULTS, **config}.items() if k not in RUNTIME_FIELDS}


_DEFAULTS = TrainConfig().to_dict()


def _add_triplet(loss: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
                 stats: list[torch.Tensor], n: torch.Tensor) -> torch.Tensor:
    """``loss + triplet_weight * triplet`` on the retrieval feature, its value logged before the count; off at 0."""
    if config.triplet_weight <= 0:
        return loss
    triplet = batch_hard_triplet_loss(features, labels, config.triplet_margin)
    stats.insert(-1, triplet.detach().double() * n)
    return loss + config.triplet_weight * triplet


def _stage1_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(images, branch="grn")
    loss = identity_loss(out.grn_logits, labels, config.label_smoothing)
    n = torch.tensor(labels.shape[0], device=labels.device, dtype=torch.float64)
    correct = (out.grn_logits.argmax(1) == labels).sum()
    stats = [correct.double(), n]
    loss = _add_triplet(loss, out.g, labels, config, stats, n)
    return loss, torch.stack([loss.detach().double() * n, *stats])


STAGE1_METRICS = ["loss", "acc", "count"]


def _stage2_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(images, branch="all")
    ce = identity_loss(out.lan_logits, labels, config.label_smoothing)
    rank = ranking_loss(out.grn_logits, out.lan_logits, labels, config.margin)  # eq. 5: the plain softmax
    loss = ce + config.rank_weight * rank
    n = torch.tensor(labels.shape[0], device=labels.device, dtype=torch.float64)
    lan_correct = (out.lan_logits.argmax(1) == labels).sum().double()
    grn_correct = (out.grn_logits.argmax(1) == labels).sum().double()
    stats = [ce.detach().double() * n, rank.detach().double() * n, lan_correct, grn_correct, n]
    loss = _add_triplet(loss, out.l, labels, config, stats, n)
    return loss, torch.stack([loss.detach().double() * n, *stats])


STAGE2_METRICS = ["loss", "ce", "rank", "acc", "grn_acc", "count"]


def metric_names(stage: int, config: TrainConfig) -> list[str]:
    """The per-epoch metrics of a stage, in the order its step returns them ('triplet' only when it is on)."""
    names = STAGE1_METRICS if stage == 1 else STAGE2_METRICS
    return [*names[:-1], "triplet", names[-1]] if config.triplet_weight > 0 else list(names)


#: Linear warmup starts at this fraction of the stage's learning rate (Bag of Tricks' 0.1).
WARMUP_START_FACTOR = 0.1


def build_optimizer(model: FeatureMaskNetwork, config: TrainConfig, stage: int) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW, over the trainable parameters; the MN keeps its mask_lr_scale."""
    lr = config.stage(stage).lr
    groups = _parameter_groups(model, lr, config)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    stage: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The stage's learning-rate schedule, stepped once per epoch.

    ``warmup_epochs`` ramps linearly from WARMUP_START_FACTOR of the rate (LinearLR), then SequentialLR hands over
    to the drop by ``lr_gamma`` at the stage's drop epoch (MultiStepLR, counted from the stage's start) or to a
    cosine decay reaching 0 at the stage's end (CosineAnnealingLR over the epochs after the warmup). Without
    warmup the step schedule is the bare MultiStepLR of the paper's recipe.
    """
    settings = config.stage(stage)
    epochs, drop = settings.epochs, settings.lr_drop_epoch
    warmup = config.warmup_epochs
    if config.lr_schedule == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs - warmup))
    else:
        main = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[drop - warmup], gamma=config.lr_gamma)
    if warmup == 0:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START_FACTOR, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def _run_stage(*, stage: int, out_dir: Path, runtime: _Runtime, **kwargs) -> TrainResult:
    """A stage, holding ``out_dir`` against a second training (rank 0 holds it for all ranks)."""
    with training_output(out_dir, stage, enabled=runtime.context.is_main):
        return _train_into(stage=stage, out_dir=out_dir, runtime=runtime, **kwargs)


@dataclass(frozen=True)
class StageFiles:
    """Where a stage writes: the finished checkpoint, the partial one a restart resumes from, the epoch metrics."""

    final: Path
    partial: Path
    metrics: Path

    @classmethod
    def of(cls, out_dir: Path, stage: int) -> StageFiles:
        name = STAGE_FILES[stage]
        return cls(out_dir / name, out_dir / f"{name[:-3]}.partial.pt", out_dir / f"stage{stage}_metrics.jsonl")


@dataclass
class _StageRun:
    """One stage in progress: what it trains, where it writes, and the epochs done so far.

    The set-up (:func:`_start`), the resume decision (:func:`_resumable_state`), one epoch (:func:`_train_epoch`),
    what is kept after it (:meth:`record`) and the finish (:meth:`finish`) each read and change this state, so
    each can be read, and tested, alone.
    """

    stage: int
    config: TrainConfig
    model: FeatureMaskNetwork
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    files: StageFiles
    label_map: dict[int, int]
    extra: dict
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    #: CPU thread counts of the stages before this one (stage 2: the GRN's), carried into its checkpoint
    threads_before: dict[str, list[int]] = field(default_factory=dict)

    @property
    def threads(self) -> dict[str, list[int]]:
        """Each stage's CPU thread counts so far (several when a resumed run changed FMN_THREADS; [] on a GPU)."""
        return {**self.threads_before, f"stage{self.stage}": stage_threads(self.history)}

    @property
    def epochs(self) -> int:
        return self.config.stage(self.stage).epochs

    def save(self, path: Path, epoch: int, complete: bool, diagnostics: dict | None = None) -> Path:
        return save_checkpoint(path, model=self.model, config=self.config, stage=self.stage, epoch=epoch,
                               complete=complete, label_map=self.label_map, optimizer=self.optimizer,
                               scheduler=self.scheduler, history=self.history, extra=self.extra,
                               diagnostics=diagnostics, threads=self.threads)

    def resume_from(self, state: dict) -> None:
        """Continue from a partial checkpoint's state (:func:`_resumable_state` said it is this run's)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch, self.history = state["epoch"], list(state["history"])
        log.info("stage %d resumes from %s at epoch %d", self.stage, self.files.partial, self.start_epoch)

    def record(self, row: dict, is_main: bool, progress: bool) -> None:
        """Keep a finished epoch: its metrics row, the metrics log and (every checkpoint_every epochs) the partial
        checkpoint; rank 0 alone writes."""
        self.history.append(row)
        if not is_main:
            return
        epoch = row["epoch"]
        write_metrics_log(self.files.metrics, self.history)
        if epoch % self.config.checkpoint_every == 0 and epoch < self.epochs:
            self.save(self.files.partial, epoch, complete=False)
        if progress:
            shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                              if k not in ("stage",))
            print(f"stage {self.stage} | {shown}", flush=True)

    def finish(self, diagnostics: dict | None) -> None:
        """The finished checkpoint, its configuration beside it as a recipe, the final metrics log; the partial
        checkpoint is removed (rank 0 only: the caller decides)."""
        self.save(self.files.final, self.epochs, complete=True,
                  diagnostics={"mask": diagnostics} if diagnostics else None)
        save_config(self.config, config_file(self.files.final))  # a recipe to train it again
        self.files.partial.unlink(missing_ok=True)
        write_metrics_log(self.files.metrics, self.history)


def stage_threads(history: list[dict]) -> list[int]:
    """The distinct CPU thread counts a stage's epochs trained with: results are bit-identical only at one count."""
    return sorted({int(row["threads"]) for row in history if row.get("threads")})


def _resumable_state(files: StageFiles, stage: int, config: TrainConfig, extra: dict) -> dict | None:
    """The partial checkpoint's state when it continues this very run (same stage, training data, GRN and settings,
    runtime fields aside), else None: an unreadable or different partial checkpoint is trained over, with a warning."""
    if not files.partial.is_file():
        return None
    try:
        state = load_checkpoint(files.partial)
        same = (state["stage"] == stage and state["extra"] == extra
                and _comparable(state["config"]) == _comparable(config.to_dict()))
    except CheckpointError as exc:
        log.warning("ignoring unreadable partial checkpoint: %s", exc)
        same = False
    if same:
        return state
    log.warning("partial checkpoint %s was made with other settings or data; starting over", files.partial)
    return None


def _start(*, stage: int, model: FeatureMaskNetwork, config: TrainConfig, table: pd.DataFrame, out_dir: Path,
           runtime: _Runtime, resume: bool, extra: dict,
           threads_before: dict[str, list[int]]) -> tuple[_StageRun, list[str], list[int]]:
    """The model on its device, its optimiser and schedule, resumed from the partial checkpoint when it is this
    run's; with the training images' paths and labels."""
    paths, labels, label_map, fingerprint = _train_split(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config, stage)
    run = _StageRun(stage, config, model, optimizer, build_scheduler(optimizer, config, stage),
                    StageFiles.of(out_dir, stage), label_map, {**extra, "train_fingerprint": fingerprint},
                    threads_before=dict(threads_before))
    state = _resumable_state(run.files, stage, config, run.extra) if resume else None
    if state is not None:
        run.resume_from(state)
    return run, paths, labels


def _batches(run: _StageRun, paths: list[str], labels: list[int], cache: ImageCache | None,
             runtime: _Runtime) -> tuple[CachedBatches, ImageCache]:
    """The stage's shuffled, augmented batches (this rank's shard), from ``cache`` when it holds the input size."""
    config, context = run.config, runtime.context
    if cache is None or cache.size != config.input_size:
        cache = ImageCache.build(paths, config.input_size, workers=config.decode_workers or None)
    batches = CachedBatches(cache, labels, config.batch_size, augment=True, pad=config.crop_pad,
                            flip_prob=config.flip_prob, seed=config.seed
                            + 7919 * run.stage, device=runtime.device, channels_last=runtime.channels_last,
                            rank=context.rank, world_size=context.world_size, erase_prob=config.random_erasing,
                            instances_per_identity=config.instances_per_identity)
    if len(batches) == 0:
        raise FMNInputError(f"{len(paths)} training images make no full batch of {config.batch_size} "
                            f"(on {context.world_size} process(es)); lower batch_size")
    return batches, cache


def _train_epoch(run: _StageRun, epoch: int, wrapped: torch.nn.Module, batches: CachedBatches,
                 scaler: torch.amp.GradScaler, runtime: _Runtime, progress: bool) -> tuple[dict, float]:
    """One epoch (index ``epoch``, from 0) over every batch, then the schedule's step: its metrics row, summed over
    all ranks, and its seconds unrounded. A NaN or infinite loss raises :class:`TrainingDivergedError` before
    anything of the epoch is kept."""
    stage, config, device, context = run.stage, run.config, runtime.device, runtime.context
    step_fn, names = (_stage1_step if stage == 1 else _stage2_step), metric_names(stage, config)
    optimizer = run.optimizer
    wrapped.train()
    batches.set_epoch(epoch)
    meter = DeviceMeter(names, device)
    bar = EpochProgress(len(batches), f"stage {stage} epoch {epoch + 1}/{run.epochs}", progress and context.is_main)
    current_lr = optimizer.param_groups[0]["lr"]
    epoch_start = time.perf_counter()
    for images, targets in batches:
        with torch.autocast(device.type, dtype=runtime.amp_dtype or torch.float32,
                            enabled=runtime.amp_dtype is not None):
            loss, stats = step_fn(wrapped, images, targets, config)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        meter.add(stats)
        bar.step(images.shape[0], meter, "loss", "acc")
    run.scheduler.step()
    totals = dict(zip(names, all_reduce_sum(meter.sums.clone(), context).tolist(), strict=True))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - epoch_start
    bar.close()
    count = totals.pop("count")
    row = {"stage": stage, "epoch": epoch + 1, "lr": current_lr,
           **{name: value / count for name, value in totals.items()},
           "images": int(count), "seconds": round(seconds, 3), "images_per_s": round(count / seconds, 1),
           **({"threads": runtime.threads} if runtime.threads else {})}
    if not math.isfinite(row["loss"]):  # every rank sees the same all-reduced loss, so all stop together
        kept = f"; {run.files.partial} (epoch {epoch}) is kept" if run.files.partial.is_file() else ""
        raise TrainingDivergedError(
            f"stage {stage} diverged: loss {row['loss']} in epoch {epoch + 1} of {run.epochs} (lr {current_lr}); "
            f"nothing was written for this epoch and no {run.files.final.name}{kept}. Lower the learning rate, or "
            "check the inputs (a NaN in the data or the starting weights)")
    return row, seconds


def _train_into(*, stage: int, model: FeatureMaskNetwork, config: TrainConfig, table: pd.DataFrame,
                out_dir: Path, runtime: _Runtime, resume: bool, progress: bool,
                on_epoch_end: EpochCallback | None, cache: ImageCache | None, extra: dict,
                threads_before: dict[str, list[int]] | None = None) -> TrainResult:
    """Set up (or resume), train the remaining epochs, finish: the stage's whole run in ``out_dir``."""
    start_wall = time.perf_counter()
    context, device = runtime.context, runtime.device
    run, paths, labels = _start(stage=stage, model=model, config=config, table=table, out_dir=out_dir,
                                runtime=runtime, resume=resume, extra=extra, threads_before=threads_before or {})
    batches, cache = _batches(run, paths, labels, cache, runtime)
    wrapped = (DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
               if context.enabled else model)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.amp_dtype == torch.float16)
    trained_images, trained_seconds = 0, 0.0

    for epoch in range(run.start_epoch, run.epochs):
        row, seconds = _train_epoch(run, epoch, wrapped, batches, scaler, runtime, progress)
        run.record(row, context.is_main, progress)
        trained_images, trained_seconds = trained_images + row["images"], trained_seconds + seconds
        barrier(context)
        if on_epoch_end is not None:
            on_epoch_end(stage, epoch + 1, row)

    diagnostics = _mask_diagnostics(model, cache, config, device, runtime.channels_last) if stage == 2 else None
    if context.is_main:
        run.finish(diagnostics)
    barrier(context)
    return TrainResult(checkpoint=run.files.final, stage=stage, epochs=run.epochs, history=run.history,
                       wall_seconds=time.perf_counter() - start_wall,
                       images_per_second=trained_images / trained_seconds if trained_seconds else 0.0,
                       resumed_from_epoch=run.start_epoch, device=str(device), diagnostics=diagnostics or {},
                       wrote_checkpoint=context.is_main, threads=runtime.threads)


def _parameter_groups(model: FeatureMaskNetwork, lr: float, config: TrainConfig) -> list[dict]:
    """Trainable parameters; the MN's at ``mask_lr_scale`` times the rate (its FC sees a large, fixed input)."""
    mixing = {id(p) for p in model.mixing.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in mixing], "lr": lr},
              {"params": [p for p in trainable if id(p) in mixing], "lr": lr * config.mask_lr_scale}]
    return [group for group in groups if group["params"]]


#: training images the end-of-stage-2 mask diagnostics are computed on (fixed, unaugmented)
DIAGNOSTIC_IMAGES = 256


@torch.no_grad()
def _mask_diagnostics(model: FeatureMaskNetwork, cache: ImageCache, config: TrainConfig, device: torch.device,
                      channels_last: bool) -> dict:
    """Mask statistics on a fixed sample of training images, stored in the checkpoint."""
    was_training = model.training
    model.eval()
    count = min(len(cache), DIAGNOSTIC_IMAGES)
    indices = torch.linspace(0, len(cache) - 1, count).long().tolist()
    batches = CachedBatches(cache, [0] * len(cache), 64, shuffle=False, drop_last=False, augment=False,
                            device=device, channels_last=channels_last, indices=indices)
    masks = [model(images).mask for images, _ in batches]
    model.train(was_training)
    return mask_diagnostics(torch.cat(masks).cpu(), config.log_mask_max, config.mask_form)


def train_stage1(table: pd.DataFrame, config: TrainConfig, out_dir: str | Path, *, resume: bool = True,
                 progress: bool = True, on_epoch_end: EpochCallback | None = None,
                 cache: ImageCache | None = None) -> TrainResult:
    """Algorithm 1, lines 1-2: fine-tune the GRN; writes ``out_dir/grn.pt``."""
    config.validate()
    runtime = _runtime(config)
    torch.manual_seed(config.seed)
    model = build_model(config, num_train_identities(table))
    for module in model.local_modules():  # theta_m, theta_l stay fixed in stage 1
        module.requires_grad_(False)
    return _run_stage(stage=1, model=model, config=config, table=table, out_dir=Path(out_dir), runtime=runtime,
                      resume=resume, progress=progress, on_epoch_end=on_epoch_end, cache=cache, extra={})


def stage2_model(grn_state: dict, config: TrainConfig, num_classes: int, source: str) -> FeatureMaskNetwork:
    """A network with the stage-1 GRN, frozen, and a fresh MN and LAN for ``config``.

    The LAN's stages start from theta_o, the weights the GRN started from,
    which the GRN checkpoint carries; ``lan_init='grn'`` copies the fine-tuned
    GRN's stages instead (not the paper's choice: an ablation). The masked layer may
    differ from the one the GRN checkpoint was built with (Table 5's ablation
    reuses one GRN) as long as the checkpoint holds theta_o for the LAN's stages.
    """
    if grn_state["stage"] != 1 or not grn_state["complete"]:
        raise CheckpointError(f"{source} is not a finished stage-1 (GRN) checkpoint "
                              f"(stage {grn_state['stage']}, complete={grn_state['complete']})")
    grn_config = TrainConfig.from_dict(grn_state["config"])
    for name in ("arch", "input_height", "input_width", "bn_neck"):
        if getattr(grn_config, name) != getattr(config, name):
            raise CheckpointError(f"{source} was trained with {name}={getattr(grn_config, name)!r} but stage 2 "
                                  f"is configured with {name}={getattr(config, name)!r}")
    broken = [key for key, value in grn_state["model"].items()
              if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise CheckpointError(f"{source} holds NaN or infinite weights in {len(broken)} tensors (e.g. {broken[:3]}): "
                              "stage 2 on it would train to a NaN loss; train the GRN again")
    if grn_state["num_classes"] != num_classes:
        raise CheckpointError(f"{source} was trained for {grn_state['num_classes']} identities, but the training "
                              f"split has {num_classes}: it belongs to another dataset or split")
    torch.manual_seed(config.seed + 1)
    model = build_model(config, num_classes, pretrained="none")
    weights, own = grn_state["model"], model.state_dict()
    merged = {}
    for key, value in own.items():
        source_key = key
        if config.lan_init == "grn" and key.startswith("lan_stages."):
            source_key = "grn_stages." + key[len("lan_stages."):]
        if key.startswith(("grn_stages.", "grn_neck.", "grn_classifier.", "lan_stages.")):
            if source_key not in weights:
                raise CheckpointError(f"{source} holds no initial weights for {key}: it was built with masked_layer="
                                      f"{grn_config.masked_layer!r}; train the GRN with masked_layer='pool1'")
            merged[key] = weights[source_key]
        else:
            merged[key] = value
    model.load_state_dict(merged)
    model.freeze_grn()
    return model


def train_stage2(table: pd.DataFrame, config: TrainConfig, grn_checkpoint: str | Path, out_dir: str | Path, *,
                 resume: bool = True, progress: bool = True, on_epoch_end: EpochCallback | None = None,
                 cache: ImageCache | None = None) -> TrainResult:
    """Algorithm 1, line 3: freeze the GRN, train MN + LAN; writes ``out_dir/fmn.pt``."""
    config.validate()
    runtime = _runtime(config)
    grn_checkpoint = Path(grn_checkpoint)
    grn_state = load_checkpoint(grn_checkpoint)
    model = stage2_model(grn_state, config, num_train_identities(table), str(grn_checkpoint))
    grn_digest = hashlib.sha1(grn_checkpoint.read_bytes()).hexdigest()
    return _run_stage(stage=2, model=model, config=config, table=table, out_dir=Path(out_dir), runtime=runtime,
                      resume=resume, progress=progress, on_epoch_end=on_epoch_end, cache=cache,
                      extra={"grn_checkpoint_sha1": grn_digest},
                      threads_before={"stage1": list(grn_state.get("threads", {}).get("stage1", []))})
