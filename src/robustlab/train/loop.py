"""The training loop: one run from a config to a run directory with weights and results.

Read from top to bottom, ``train`` is: open the run, prepare the data, build the model,
loss, optimizer and schedule, restore a checkpoint when resuming, then loop over epochs
of ``TrainStep``s (``robustlab.train.step``), evaluating and checkpointing between epochs
(``robustlab.runs.checkpoint``). On CUDA, ``train.cuda_graph`` replays each step's forward
and backward pass from a captured graph (``robustlab.train.cuda_graph``).

Speed options (bf16 autocast, torch.compile, channels_last, CUDA graphs) apply to training only:
evaluation always certifies a float64 eval-mode copy of the plain model
(``robustlab.certify.evaluate``).

Determinism: the loader's order and augmentation are a function of (seed, epoch), and the
checkpoint holds the model, optimizer, schedule, step and RNG states, so on the CPU a run
that is killed and resumed ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from robustlab.certify import smoothing
from robustlab.certify.evaluate import evaluate, lipschitz_constant
from robustlab.certify.margins import certified_radii
from robustlab.config import PAPER_EPS, ConfigError, ExperimentConfig, TrainConfig, check_ranges
from robustlab.data.datasets import recorded_data_dir
from robustlab.data.loader import DeviceLoader
from robustlab.data.splits import PreparedData, prepare_data
from robustlab.errors import RobustlabError, one_line
from robustlab.files import DiskFullError, remove_stale_temporaries
from robustlab.nn.models import ARCHITECTURE_VERSION
from robustlab.progress import Progress, note
from robustlab.records import EvalResult, SmoothingResult
from robustlab.runs import claims
from robustlab.runs.checkpoint import (
    TrainState,
    build_model,
    load_checkpoint,
    model_architecture,
    save_checkpoint,
    save_model,
)
from robustlab.runs.result_files import RunResults
from robustlab.runs.store import IndexBusyError, Run, RunStore
from robustlab.runtime import seed_everything
from robustlab.train import distributed
from robustlab.train.cuda_graph import GraphedTrainStep
from robustlab.train.distributed import DistributedContext
from robustlab.train.loggers import MetricMirrors, check_available
from robustlab.train.losses import build_loss
from robustlab.train.optim import build_optimizer, build_schedule, total_steps
from robustlab.train.step import TrainStep, cpu_bf16_flags

SYNC_EVERY = 20  # steps between host synchronisations (progress bar, divergence check)
INDEX_RETRY_S = (2.0, 8.0, 30.0)  # back-off between tries to index a stopped run whose index is locked


class TrainingDivergedError(RobustlabError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def train(
    config: ExperimentConfig | None = None,
    run_dir: str | Path | None = None,
    store: RunStore | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, Run], None] | None = None,
) -> Run:
    """Train a model as ``config`` says; returns its run directory.

    ``resume=True`` continues the run in ``run_dir`` from its checkpoint (its saved config
    is used when ``config`` is None). ``store`` indexes the run; by default the folder
    holding the run (``run_dir``'s parent, else $ROBUSTLAB_RUNS or ./runs).
    ``on_epoch_end(epoch, run)`` is called after each epoch's checkpoint.
    """
    if resume and config is None and run_dir is not None:
        config = Run(run_dir).load_config()
    if config is not None:
        check_ranges(config)  # before any folder is made or data is read
        check_available(config.train.log_to)
        if not resume:
            config = _record_data_folder(config)
    context, device = distributed.setup(config.train.device if config else "auto")
    try:
        return _train(config, run_dir, store, resume, progress, on_epoch_end, context, device)
    finally:
        distributed.teardown(context)


def _train(
    config: ExperimentConfig | None,
    run_dir: str | Path | None,
    store: RunStore | None,
    resume: bool,
    progress: bool,
    on_epoch_end: Callable[[int, Run], None] | None,
    context: DistributedContext,
    device: torch.device,
) -> Run:
    run, config, store = _open_run(config, run_dir, store, resume, context)
    # Only the main process indexes the run (``_open_run`` gives it a store). While it trains it
    # beats in the index; a run whose beats stop reads "interrupted"
    main_store = store if context.is_main else None
    with claims.alive(main_store) if main_store is not None else nullcontext():
        try:
            _fit(run, config, main_store, resume, progress, on_epoch_end, context, device)
        except Exception as error:  # bad data, bad config, diverged or crashed: the last checkpoint stays
            if main_store is not None:
                _record_stop(run, config, main_store, resume, "failed", one_line(error), error)
            raise
        except BaseException as error:  # Ctrl-C, or a scheduler's signal
            if main_store is not None:
                _record_stop(run, config, main_store, resume, "interrupted", None, error)
            raise
    distributed.barrier(context)
    return run


def _record_stop(
    run: Run,
    config: ExperimentConfig,
    store: RunStore,
    resume: bool,
    status: str,
    error: str | None,
    cause: BaseException,
) -> None:
    """Index a run that stopped; one that stopped before its first epoch ended (bad data, bad
    config) leaves no folder behind. ``cause`` is what stopped it."""
    if not resume and not run.metrics_path.exists() and not run.checkpoint_path.exists():
        with suppress(DiskFullError, IndexBusyError):  # the folder is gone; a stale row reads interrupted
            store.discard(run)
    else:
        _index(run, config, store, status, error=error, cause=cause)


def _index(
    run: Run,
    config: ExperimentConfig,
    store: RunStore,
    status: str,
    results: RunResults | None = None,
    error: str | None = None,
    cause: BaseException | None = None,
) -> None:
    """Record the run's status in the index. Its folder is the run's record: an index that
    another process keeps locked is tried again after ``INDEX_RETRY_S`` and, failing that (or
    on a full disk), the run is left for ``runs reindex`` with a one-line warning, never failed."""
    for delay in (*INDEX_RETRY_S, None):
        try:
            store.record(run, config, status=status, results=results, error=error)
            return
        except IndexBusyError as problem:
            if delay is not None:
                time.sleep(delay)
                continue
            _warn_unindexed(run, store, status, problem)
        except DiskFullError as problem:
            if not isinstance(cause, DiskFullError):  # else the run's own error says it already
                _warn_unindexed(run, store, status, problem)
        return


def _warn_unindexed(run: Run, store: RunStore, status: str, problem: Exception) -> None:
    print(
        f"robustlab: warning: {run.path} is {status} but its index entry was not written ({problem}); "
        f"its folder holds everything: `robustlab runs reindex --runs-root {store.root}` indexes it",
        file=sys.stderr,
    )


@dataclass
class TrainingParts:
    """What a run trains with, built from its config: the data, the device loader, the length
    of training, the model and what updates it. ``benchmarks/profile_step.py`` times the same."""

    data: PreparedData
    loader: DeviceLoader
    epochs: float
    steps: int
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRScheduler


def build_training(config: ExperimentConfig, device: torch.device) -> TrainingParts:
    """Seeds, then builds a run's ``TrainingParts`` as training does (before any resume)."""
    seed_everything(config.seed)
    data = prepare_data(config.data)
    loader = DeviceLoader(
        data.x_train,
        data.y_train,
        config.train.batch_size,
        augment=config.augment,
        mean=data.mean,
        device=device,
        seed=config.seed,
        fill_last=True,
    )
    epochs = training_epochs(config, data)
    steps = training_steps(config, len(data.y_train), data.full_train_size)
    model = build_model(config, data).to(device)
    optimizer = build_optimizer(model.parameters(), config.optim)
    schedule = build_schedule(optimizer, config.optim, steps)
    return TrainingParts(data, loader, epochs, steps, model, build_loss(config.loss, model), optimizer, schedule)


def _fit(
    run: Run,
    config: ExperimentConfig,
    store: RunStore | None,
    resume: bool,
    progress: bool,
    on_epoch_end: Callable[[int, Run], None] | None,
    context: DistributedContext,
    device: torch.device,
) -> None:
    parts = build_training(config, device)
    data, loader, epochs, steps, model = parts.data, parts.loader, parts.epochs, parts.steps, parts.model
    loss_fn, optimizer, schedule = parts.loss_fn, parts.optimizer, parts.schedule
    architecture = model_architecture(config, data)
    state = TrainState()
    if resume and run.checkpoint_path.exists():
        state = load_checkpoint(run.checkpoint_path, model, optimizer, schedule, device)
    elif resume and context.is_main:  # said even with --quiet: the user expected to continue
        print(
            f"robustlab: {run.path} has no checkpoint.pt (it was stopped before its first checkpoint): "
            "training starts again from step 0",
            file=sys.stderr,
        )
    train_model = prepare_for_training(model, config.train, context, device)

    main = store is not None  # the main process: it indexes the run
    if store is not None:
        if resume:
            _forget_metrics_after(run, state.step)
        store.record(run, config, status="running")
    bounds = training_bounds(model)
    step = make_train_step(
        train_model, loss_fn, optimizer, schedule, config.train, context, device, grad_clip=config.optim.grad_clip
    )
    if main:
        note(f"{config.name}: {'resuming' if resume else 'training'} in {run.path}", progress)
    bar = Progress(steps, config.name, "step", progress and main, initial=state.step)
    mirrors = MetricMirrors(config.train.log_to if main else [], run, config)
    # A subset's passes over its data are short (one batch when N <= the batch size, and
    # 3000 * 50000 / 48 of them in the paper's smallest run): group them so that logging,
    # evaluation and checkpoints happen once per full-set epoch's worth of steps.
    passes = math.ceil(steps / len(loader))
    passes_per_epoch = max(1, round(epochs / config.train.epochs))
    try:
        for first in range(state.epoch, passes, passes_per_epoch):
            epoch = min(first + passes_per_epoch, passes) - 1  # the group's last pass
            start = time.perf_counter()
            metrics = run_epoch(
                step, loader, state, steps, range(first, epoch + 1), bounds, context, config.train.channels_last, bar
            )
            state.train_time_s += time.perf_counter() - start
            state.epoch, state.history = epoch + 1, metrics
            finished = state.step >= steps
            logical_epoch = math.ceil((epoch + 1) / passes_per_epoch)
            record = {"epoch": logical_epoch, "step": state.step, "lr": schedule.get_last_lr()[0], **metrics}
            if main and config.train.eval_every and logical_epoch % config.train.eval_every == 0 and not finished:
                record.update(_evaluation_metrics(_certify_eval_split(model, data, config, device), data.eval_split))
            if main:
                run.log_metrics(record)
                mirrors.log(record)
                bar.line(_epoch_line(record, logical_epoch, math.ceil(passes / passes_per_epoch), steps))
                if finished or logical_epoch % max(config.train.checkpoint_every, 1) == 0:
                    save_checkpoint(run.checkpoint_path, model, optimizer, schedule, state, architecture)
            if on_epoch_end is not None:
                on_epoch_end(epoch, run)
    except BaseException:
        mirrors.close()
        raise
    finally:
        bar.close()

    if store is not None:
        results = final_results(model, data, config, state, device, context, progress)
        results.warnings = training_warnings(results, data.num_classes, run.metrics())
        save_model(run.model_path, model, architecture)
        run.save_results(results)
        final = {
            "epoch": math.ceil(state.epoch / passes_per_epoch),
            "step": state.step,
            "final": True,
            **_evaluation_metrics(results, data.eval_split),
        }
        run.log_metrics(final)
        mirrors.log(final)
        mirrors.close()
        _index(run, config, store, "done", results=results)


# ---------------------------------------------------------------------------------------
# One epoch


def run_epoch(
    step: TrainStep,
    loader: DeviceLoader,
    state: TrainState,
    steps: int,
    epochs: Iterable[int],
    bounds: Callable[[], float | torch.Tensor] | None,
    context: DistributedContext,
    channels_last: bool,
    bar: Progress,
) -> dict[str, float]:
    """Train on the batches of the loader passes ``epochs`` (or up to ``steps``); returns
    their training metrics (the CRA with ``bounds()``, see ``training_bounds``).

    Per-step statistics stay on the device and are read every ``SYNC_EVERY`` steps, which
    is also when a non-finite loss is detected.
    """
    step.model.train()
    totals = torch.zeros(4, dtype=torch.float64, device=loader.device)  # loss sum, correct, certified, n
    window: list[tuple[int, float, torch.Tensor]] = []  # (step, lr, per-step stats)
    for epoch, x, y in _batches(loader, epochs):
        if state.step >= steps:
            break
        x, y, weight = distributed.shard(x, y, context)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        lr = float(step.schedule.get_last_lr()[0])
        loss, logits = step(x, y, weight)
        window.append((state.step, lr, _batch_stats(loss, logits, y, bounds)))
        state.step += 1
        bar.update(1)  # host-side only; the statistics below wait for the device
        if len(window) == SYNC_EVERY or state.step >= steps:
            totals += _flush(window, epoch, context)
            window = []
            bar.set_postfix(_epoch_metrics(totals, bounds))
    if window:
        totals += _flush(window, epoch, context)
    distributed.all_reduce(totals, context)
    return _epoch_metrics(totals, bounds)


def _epoch_line(record: dict, epoch: int, epochs: int, steps: int) -> str:
    """The plain progress line of one epoch: where training stands and its metrics."""
    metrics = "  ".join(
        f"{key.removeprefix('train_')} {value:.4f}"
        for key, value in record.items()
        if key not in ("epoch", "step", "lr") and isinstance(value, float)
    )
    return f"epoch {epoch}/{epochs}  step {record['step']}/{steps}  lr {record['lr']:.3g}  {metrics}"


def _batches(loader: DeviceLoader, epochs: Iterable[int]) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(epoch, x, y)`` for every batch of the given loader passes."""
    for epoch in epochs:
        loader.set_epoch(epoch)
        for x, y in loader:
            yield epoch, x, y


def training_bounds(model: nn.Module) -> Callable[[], float | torch.Tensor] | None:
    """What the training CRA divides margins by, read at every step: None for a standard
    network; else the model's pairwise bounds from ``margin_lipschitz(estimate=True)``,
    which for a bound that moves with the weights (LiResNet) is the cheap training
    estimate: close to the certificate's bound, but not a certificate."""
    lipschitz, margin_lipschitz = lipschitz_constant(model), getattr(model, "margin_lipschitz", None)
    if lipschitz is None:
        return None
    if margin_lipschitz is None:
        return lambda: lipschitz

    def estimate() -> torch.Tensor:
        with torch.no_grad():
            return margin_lipschitz(estimate=True)

    return estimate


def _batch_stats(
    loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, bounds: Callable[[], float | torch.Tensor] | None
) -> torch.Tensor:
    correct = (logits.argmax(dim=1) == y).sum()
    if bounds is None:
        certified = torch.zeros((), device=y.device)
    else:
        certified = (certified_radii(logits, y, bounds()) > PAPER_EPS).sum()
    n = torch.full((), len(y), device=y.device)  # not torch.tensor(): on CUDA that copy waits for the device
    return torch.stack([loss.double() * len(y), correct.double(), certified.double(), n.double()])


def _flush(window: list[tuple[int, float, torch.Tensor]], epoch: int, context: DistributedContext) -> torch.Tensor:
    """Sum a window of step statistics; raise if any step's loss was not finite (on every rank)."""
    stats = torch.stack([s for _, _, s in window])
    finite = torch.isfinite(stats[:, 0])
    first_bad = torch.where(finite, len(window), torch.arange(len(window), device=stats.device)).min()
    first_bad = distributed.all_reduce(first_bad.reshape(1).double(), context, op="min")
    if first_bad.item() < len(window):
        step, lr, _ = window[int(first_bad.item())]
        raise TrainingDivergedError(
            f"the training loss became NaN or infinite at step {step + 1} (epoch {epoch + 1}, lr {lr:.4g}); "
            "the run stopped and its last good checkpoint is kept. Lower optim.lr (e.g. by a factor of 3-10) "
            "and train again."
        )
    return stats.sum(dim=0)


def _epoch_metrics(totals: torch.Tensor, bounds: Callable[[], float | torch.Tensor] | None) -> dict[str, float]:
    loss_sum, correct, certified, n = totals.tolist()
    metrics = {"train_loss": loss_sum / max(n, 1), "train_accuracy": correct / max(n, 1)}
    if bounds is not None:
        metrics["train_cra"] = certified / max(n, 1)
    return metrics


# ---------------------------------------------------------------------------------------
# Building the pieces


def training_epochs(config: ExperimentConfig, data: PreparedData) -> float:
    """Epochs to train: subsets train ``full_size / N`` times longer, for the same compute."""
    epochs = config.train.epochs
    if config.data.subset_size is not None and config.train.scale_epochs:
        epochs = epochs * data.full_train_size / len(data.y_train)
    return epochs


def training_steps(config: ExperimentConfig, size: int, full_size: int) -> int:
    """Optimizer steps of a run on ``size`` training images (``full_size`` before subsetting).

    The budget is images processed: ``epochs`` passes over the full training split. A subset
    with ``train.scale_epochs`` processes the same number of images (the paper's rule: epochs x k
    when the set is divided by k), in steps of min(batch, N) images (the loader fills a pass's
    last batch up to the batch size), so every size of a sweep sees the same images within one
    batch, whatever the batch size divides. Otherwise: ``epochs`` passes over the set.
    """
    batch = config.train.batch_size
    if config.data.subset_size is not None and config.train.scale_epochs and size < full_size:
        return max(1, math.ceil(config.train.epochs * full_size / min(batch, size) - 1e-9))
    return total_steps(config.train.epochs, math.ceil(size / batch))


def prepare_for_training(
    model: nn.Module, cfg: TrainConfig, context: DistributedContext, device: torch.device
) -> nn.Module:
    """The module the training steps call: the model, maybe channels_last, DDP-wrapped, compiled.

    Parameters are shared with ``model``, which evaluation and checkpoints use.
    """
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    model = distributed.wrap_model(model, context, device)
    if cfg.compile:
        model = cast(nn.Module, torch.compile(model))
    return model


def make_train_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: LRScheduler,
    cfg: TrainConfig,
    context: DistributedContext,
    device: torch.device,
    grad_clip: float | None = None,
) -> TrainStep:
    """The step the loop calls: eager, or replayed from a CUDA graph with ``train.cuda_graph``."""
    autocast = torch.bfloat16 if cfg.precision == "bfloat16" else None
    if cfg.compile and autocast is not None and device.type == "cuda":
        raise ConfigError(
            "train.compile with train.precision=bfloat16 is refused on CUDA: under bf16 autocast the compiled "
            "backward pass gave NaN gradients from the first step (torch 2.11 on an H200; benchmarks/RESULTS.md). "
            "Use train.cuda_graph=true with bfloat16 (the fast path), or train.compile with float32"
        )
    if autocast is not None and device.type == "cpu" and not cpu_bf16_flags():
        raise ConfigError(
            "train.precision=bfloat16 on the CPU needs native bfloat16 arithmetic (cpuinfo flags avx512_bf16, "
            "amx_bf16 or bf16), which this processor lacks; use train.precision=float32"
        )
    if not cfg.cuda_graph:
        return TrainStep(model, loss_fn, optimizer, schedule, autocast, grad_clip)
    if device.type != "cuda":
        raise ConfigError(
            f"train.cuda_graph replays CUDA graphs and needs a CUDA device, but training runs on "
            f"{device}; set train.cuda_graph=false or train.device=cuda"
        )
    if context.enabled:
        raise ConfigError(
            "train.cuda_graph does not combine with multi-process (DDP) training: its gradient "
            "all-reduce runs outside the graph; set train.cuda_graph=false under torchrun"
        )
    return GraphedTrainStep(model, loss_fn, optimizer, schedule, autocast, grad_clip)


# ---------------------------------------------------------------------------------------
# Run directory and results


def _open_run(
    config: ExperimentConfig | None,
    run_dir: str | Path | None,
    store: RunStore | None,
    resume: bool,
    context: DistributedContext,
) -> tuple[Run, ExperimentConfig, RunStore | None]:
    if resume:
        if run_dir is None:
            raise ValueError("resume=True needs the run directory to continue")
        run = Run(run_dir)
        saved = run.load_config()
        if config is not None and config != saved:
            raise ConfigError(
                f"cannot resume {run.path} with a different config; resume with its own config "
                "(leave the config out) or start a new run"
            )
        if run.results_path.exists():
            raise ValueError(f"{run.path} has finished (results.json exists); nothing to resume")
        if context.is_main:
            remove_stale_temporaries(run.path)  # a checkpoint write that a kill cut short
            store = store or RunStore(run.path.parent)
        return run, saved, store
    if config is None:
        raise ValueError("train() needs a config unless it resumes a run")
    if run_dir is not None and Run(run_dir).checkpoint_path.exists():
        raise ValueError(f"{run_dir} already holds a training run; resume it, or choose a new run directory")
    if not context.is_main:
        return Run(distributed.broadcast_object("", context)), config, None  # "": rank 0 sends the run directory
    store = store or RunStore(Path(run_dir).parent if run_dir is not None else None)
    run = store.create(config, run_dir)
    distributed.broadcast_object(str(run.path), context)
    return run, config, store


def _record_data_folder(config: ExperimentConfig) -> ExperimentConfig:
    """The config with the data folder it reads ($ROBUSTLAB_DATA or the default resolved), so that
    the run's config.yaml finds the same files from any shell."""
    folder = recorded_data_dir(config.data.name, config.data.data_dir)
    if folder == config.data.data_dir:
        return config
    return replace(config, data=replace(config.data, data_dir=folder))


def _forget_metrics_after(run: Run, step: int) -> None:
    """Drop metrics of steps the checkpoint does not include: they are about to be trained again.
    A damaged tail is set aside in a named file (said on stderr); damage before sound records
    stops the resume with an error naming the line (``Run.rewind_metrics``)."""
    aside = run.rewind_metrics(step)
    if aside is not None:
        print(
            f"robustlab: {run.metrics_path} ended in damaged lines (a write cut short?); moved them to {aside}",
            file=sys.stderr,
        )


def _certify_eval_split(
    model: nn.Module, data: PreparedData, config: ExperimentConfig, device: torch.device, progress: bool = False
) -> EvalResult:
    return evaluate(
        model, data.x_eval, data.y_eval, config.eval.eps, config.eval.batch_size, device, data.num_classes, progress
    )


def _evaluation_metrics(result: EvalResult | RunResults, split: str) -> dict:
    """Flat metrics.jsonl keys: ``val_accuracy``, ``val_cra_36/255``, ... (``test_`` without a validation split)."""
    metrics = {f"{split}_accuracy": result.accuracy}
    for point in result.cra:
        metrics[f"{split}_cra_{point.label}"] = point.cra
    return metrics


def training_warnings(results: RunResults, num_classes: int, records: list[dict]) -> list[str]:
    """What the end-of-run summary must say plainly: a run at chance accuracy learned nothing,
    though its loss stayed finite (a NaN loss stops the run with TrainingDivergedError instead)."""
    chance = 1 / num_classes
    if results.accuracy > 1.5 * chance:
        return []
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    trend = ""
    if len(losses) >= 2:
        verb = "stopped falling" if losses[-1] > 0.9 * losses[0] else "fell"
        trend = f"; the training loss {verb} ({losses[0]:.4g} in the first epoch, {losses[-1]:.4g} in the last)"
    return [
        f"accuracy {results.accuracy:.1%} is chance level (1 in {num_classes} = {chance:.1%}): the model "
        f"learned nothing{trend}. Try another optim.lr (3-10x lower if the loss stalled high, higher if it barely "
        "moved) or more epochs, and check the data's labels"
    ]


def final_results(
    model: nn.Module,
    data: PreparedData,
    config: ExperimentConfig,
    state: TrainState,
    device: torch.device,
    context: DistributedContext,
    progress: bool = False,
) -> RunResults:
    evaluation = _certify_eval_split(model, data, config, device, progress)
    epochs_done = state.step / math.ceil(len(data.y_train) / config.train.batch_size)
    return RunResults(
        accuracy=evaluation.accuracy,
        cra=evaluation.cra,
        eval_split=data.eval_split,
        n_eval=evaluation.n,
        n_train=len(data.y_train),
        lipschitz_constant=evaluation.lipschitz_constant,
        epochs=epochs_done,
        steps=state.step,
        **state.history,
        train_time_s=state.train_time_s,
        time_per_epoch_s=state.train_time_s / max(epochs_done, 1e-9),
        eval_time_s=evaluation.time_s or 0.0,
        device=str(device),
        world_size=context.world_size,
        torch_version=torch.__version__,
        architecture_version=ARCHITECTURE_VERSION,
        train_eval=_certify_training_images(model, data, config, device) if config.eval.train_set else None,
        smoothing=_smoothing_estimate(model, data, config) if config.eval.smoothing_samples > 0 else None,
    )


def _certify_training_images(
    model: nn.Module, data: PreparedData, config: ExperimentConfig, device: torch.device
) -> EvalResult:
    """``eval.train_set``: the certified evaluation of the very images the run trained on (no augmentation)."""
    return evaluate(
        model, data.x_train, data.y_train, config.eval.eps, config.eval.batch_size, device, data.num_classes
    )


def _smoothing_estimate(model: nn.Module, data: PreparedData, config: ExperimentConfig) -> SmoothingResult:
    """``eval.smoothing_samples``: the paper's smoothing estimate (not a guarantee) on the evaluation
    images, with the noise the net was trained with; per-image records are not kept."""
    if not config.augment.noise_std > 0:
        raise ConfigError("eval.smoothing_samples needs a net trained with noise: set augment.noise_std (e.g. 1/8)")
    result = smoothing.estimate(
        model.eval(),
        data.x_eval,
        data.y_eval,
        config.augment.noise_std,
        config.eval.smoothing_samples,
        seed=config.seed,
        eps=config.eval.eps,
    )
    result.records = []
    return result
