"""The epoch loop: micro-batches, gradient accumulation, mixed precision, DDP, early stopping, exact resume."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist

from ..geo.hierarchy import Hierarchy
from ..model.checkpoint import publish_checkpoint
from ..model.geosurge import GeoSURGE
from .config import LOWER_IS_BETTER, TrainConfig
from .processes import Run
from .sources import BatchSource
from .state import Counters, load_state, save_state

BEST = "best"
LATEST = "latest"  # exported at every epoch end: the Predictor can load it while training runs
#: a validator: the model's validation scores (``geosurge.geo.metrics`` names), or None without validation photos
Validate = Callable[[GeoSURGE], "dict[str, float]"]


class Encoder(torch.nn.Module):
    """The batch source's encoding step (``GeoSURGE.encode`` or ``encode_hidden``) as a module's forward: DDP
    synchronizes the gradients of calls through its own forward only."""

    def __init__(self, model: GeoSURGE, encode):
        super().__init__()
        self.model, self.encode = model, encode

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.encode(self.model, inputs, labels)


class Fit:
    """Optimizer, precision, DDP wrapper and the counters that make a run resumable; ``run`` is the epoch loop."""

    def __init__(self, cfg: TrainConfig, model: GeoSURGE, ctx: Run, encode):
        self.cfg, self.optim, self.ctx, self.model = cfg, cfg.optim, ctx, model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        self.accum = self.optim.accumulation(ctx.processes.world)
        self.encoder = Encoder(model, encode)
        if ctx.processes.world > 1:
            dev = ctx.device
            device_ids = [dev.index] if dev.type == "cuda" else None
            self.encoder = torch.nn.parallel.DistributedDataParallel(self.encoder, device_ids=device_ids)
        self.amp_dtype = cfg.run.amp_dtype() if ctx.device.type == "cuda" else None
        # float16 needs loss scaling (its range underflows small gradients); bfloat16 does not
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.counters = Counters()

    def resume(self) -> None:
        got = load_state(self.ctx.work_dir, self.model, self.opt)
        if got is None:
            self.ctx.say(f"--resume: no training state in {self.ctx.work_dir}; starting from scratch")
            return
        self.counters = got
        if self.scaler is not None and got.scaler:
            self.scaler.load_state_dict(got.scaler)
        self.ctx.say(f"resuming at epoch {got.epoch}, batch {got.batch}, step {got.step}")

    def log_start(self, resumed: bool, **sizes: int) -> None:
        ctx, amp = self.ctx, self.amp_dtype
        ctx.log(kind="start", config=self.cfg.to_dict(), world=ctx.processes.world, device=str(ctx.device), accum=self.accum,
                effective_batch=self.optim.micro_batch * self.accum * ctx.processes.world, amp=str(amp) if amp else None,
                **sizes, resumed=resumed)

    def save_state(self) -> None:
        if self.scaler is not None:
            self.counters.scaler = self.scaler.state_dict()
        save_state(self.ctx.work_dir, self.model, self.opt, self.counters)

    def run(self, source: BatchSource, validate: Validate | None, hierarchy: Hierarchy) -> None:
        """Epochs until ``optim.epochs``, ``optim.max_steps`` or ``optim.patience`` epochs without a gain. Without a
        validator (the cross-validated recipe: a fixed number of epochs) every epoch replaces the last."""
        c, processes = self.counters, self.ctx.processes
        for epoch in range(c.epoch, self.optim.epochs):
            lr = self.optim.lr * self.optim.lr_gamma**epoch
            losses, stop = self._train_epoch(source, epoch, lr)
            if stop and processes.main:
                self.save_state()  # as if interrupted here: --resume continues this epoch
            self._end_epoch(epoch, lr, losses, validate(self.model) if validate else None, hierarchy)
            if stop:
                break
            c.epoch, c.batch = epoch + 1, 0
            if processes.main:
                self.save_state()
            if c.bad_epochs >= self.optim.patience:
                self.ctx.say(f"early stopping: no {self.cfg.run.val_metric} gain for {self.optim.patience} epochs "
                             f"(best epoch {c.best_epoch})")
                break

    def _train_epoch(self, source, epoch: int, lr: float) -> tuple[list[float], bool]:
        """Micro-batches from ``counters.batch`` on; returns (their losses, whether max_steps was reached)."""
        c, processes, device, optim = self.counters, self.ctx.processes, self.ctx.device, self.optim
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.encoder.train()
        nb = source.num_batches(epoch, optim.micro_batch)
        bar = None
        if self.cfg.run.progress and processes.main:
            from tqdm.auto import tqdm

            bar = tqdm(total=nb, initial=c.batch, desc=f"epoch {epoch}", unit="batch")
        micro_i, losses, stop = c.batch, [], False
        self.opt.zero_grad(set_to_none=True)
        uneven = processes.world > 1 and source.uneven
        batches = source.batches(epoch, optim.micro_batch, start=c.batch)
        for inputs, labels, cells in (_lockstep(batches, device) if uneven else batches):
            last = (micro_i + 1) % self.accum == 0 or (not uneven and micro_i + 1 >= nb)
            loss, per_level, accs = self._backward(inputs, labels, cells, sync=last)
            micro_i += 1
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", step=c.step)
            if not last:
                continue
            self._step()
            c.batch = micro_i
            if c.step % self.cfg.run.log_every == 0 or c.step == 1:
                self.ctx.log(kind="step", step=c.step, epoch=epoch, batch=micro_i, lr=lr, loss=loss.item(),
                             level_loss=per_level, level_acc=accs, temperatures=_temps(self.model))
            if self.cfg.run.checkpoint_every and c.step % self.cfg.run.checkpoint_every == 0 and processes.main:
                self.save_state()
            if optim.max_steps and c.step >= optim.max_steps:
                stop = True
                break
        if bar is not None:
            bar.close()
        return losses, stop

    def _backward(self, inputs, labels, cells, sync: bool):
        """Forward and backward of one micro-batch; gradients are all-reduced only on the last of an accumulation."""
        device, amp = self.ctx.device, self.amp_dtype
        inputs, cells = inputs.to(device, non_blocking=True), cells.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True) if labels is not None else None
        no_sync = self.encoder.no_sync() if (self.ctx.processes.world > 1 and not sync) else contextlib.nullcontext()
        with no_sync:
            with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                feats = self.encoder(inputs, labels)
            loss, per_level, accs = self.model.geo.loss(feats.float(), cells)
            (self.scaler.scale(loss / self.accum) if self.scaler is not None else loss / self.accum).backward()
        return loss, per_level, accs

    def _step(self) -> None:
        """One optimizer step (unscale, clip, step) on the accumulated gradients."""
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        if self.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)  # skipped when the scaled gradients overflowed
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.counters.step += 1

    def _end_epoch(self, epoch: int, lr: float, losses: list[float], metrics: dict[str, float] | None, hierarchy: Hierarchy) -> None:
        """Track the best epoch, publish the best and latest exports, log and print the epoch."""
        c, ctx, run = self.counters, self.ctx, self.cfg.run
        value = float(metrics[run.val_metric]) if metrics else None
        improved = value is None or _better(run.val_metric, value, c.best)
        extra = {"epoch": epoch, "val": metrics}
        if improved:
            c.best, c.best_epoch, c.bad_epochs = value, epoch, 0
            if ctx.processes.main:
                publish_checkpoint(ctx.work_dir / BEST, self.model, hierarchy, extra=extra, keep=run.keep_exports)
        else:
            c.bad_epochs += 1
        if ctx.processes.main:
            publish_checkpoint(ctx.work_dir / LATEST, self.model, hierarchy, extra=extra, keep=run.keep_exports)
        train_loss = float(np.mean(losses)) if losses else None
        c.history.append({"epoch": epoch, "train_loss": train_loss, **(metrics or {})})
        ctx.log(kind="epoch", epoch=epoch, lr=lr, train_loss=train_loss, val=metrics, improved=improved)
        ctx.say(f"epoch {epoch}: train loss {train_loss or float('nan'):.4f}" + (_scores(run.val_metric, value, metrics, improved) if metrics else ""))


def _scores(name: str, value: float, metrics: dict[str, float], improved: bool) -> str:
    return (f"  val {name} {value:.3f}  (acc 25/200/750/2500 km: {metrics['acc_25km']:.1f} / {metrics['acc_200km']:.1f} / "
            f"{metrics['acc_750km']:.1f} / {metrics['acc_2500km']:.1f}){'  *best' if improved else ''}")


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None or not math.isfinite(old):
        return math.isfinite(new)
    return new < old if metric in LOWER_IS_BETTER else new > old


def _lockstep(batches, device: torch.device):
    """Yield while every process still has a batch: streamed shards differ in size, and a process that
    stopped early would leave the others waiting in a collective forever. Costs one tiny all-reduce per
    micro-batch; the processes with more data drop their tail of the epoch (a different tail each epoch)."""
    flag = torch.ones(1, device=device if dist.get_backend() == "nccl" else "cpu")
    for batch in batches:
        flag.fill_(1)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if flag.item() == 0:
            return
        yield batch
    flag.fill_(0)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)


def _temps(model: GeoSURGE) -> list[float] | None:
    temps = model.geo.temperatures()
    return [round(float(t), 4) for t in temps.detach()] if temps is not None else None
