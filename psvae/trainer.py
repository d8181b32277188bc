"""Fitting one PS-VAE (``model.md`` §5). Plain PyTorch; knows nothing about Ray.

    trainer = Trainer(config, data)
    for result in trainer.epochs():      # one EpochResult per epoch
        ...                              # report it, save a checkpoint, stop early, ...
    summary = trainer.finish()           # val/test metrics of the best checkpoint

Validation uses the posterior means and the full (un-annealed) weights, so its loss is
comparable across epochs; the best checkpoint is the one with the lowest validation loss.
A checkpoint holds the model, the optimiser, the epoch, the RNG states and the history, and
resuming from it continues the same run: on the CPU the numbers are the same as those of an
uninterrupted run. A non-finite loss ends the fit with the status "diverged".
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psvae.config import FitConfig
from psvae.data import FrameData
from psvae.errors import ConfigError
from psvae.family import FAMILY
from psvae.losses import LossWeights, family_loss, weights_for_epoch
from psvae.metrics import (
    EpochAccumulator,
    abs_corr_first_two,
    mean_abs_pairwise_corr,
    session_accuracy,
)
from psvae.model import PSVAE
from psvae.runtime import keep_large_allocations, resolve_device, resolve_precision

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class EpochResult:
    """What one epoch produced. ``train`` and ``val`` map metric names to numbers."""

    epoch: int  # 0-based
    train: dict[str, float]
    val: dict[str, float]
    alpha: float
    beta_e: float
    k_e: float
    is_best: bool
    seconds: float
    status: str  # "running" or "diverged"

    def flat(self) -> dict[str, Any]:
        """One row: ``epoch``, ``train_loss``, ``val_pixel_mse``, ... (the result-table columns)."""
        row: dict[str, Any] = {"epoch": self.epoch}
        row.update({f"train_{k}": v for k, v in self.train.items()})
        row.update({f"val_{k}": v for k, v in self.val.items()})
        row.update(
            alpha=self.alpha,
            beta_e=self.beta_e,
            k_e=self.k_e,
            is_best=self.is_best,
            seconds=self.seconds,
            status=self.status,
        )
        return row


@dataclass(frozen=True)
class FitSummary:
    """The outcome of a fit, with metrics computed from the best checkpoint."""

    status: str  # "completed" or "diverged"
    precision: str  # as resolved: "float32" or "bf16"
    epochs_run: int
    best_epoch: int | None
    metrics: dict[str, float] = field(default_factory=dict)


def build_model(cfg: FitConfig, frame_shape: tuple[int, int, int], n_labels: int) -> PSVAE:
    """The network, initialised from ``train.seed_model`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed_model)
        return PSVAE(frame_shape, n_labels, cfg.model)


def check_fits_data(cfg: FitConfig, data: FrameData) -> None:
    """Refuse a config the data cannot serve, before any training."""
    s = cfg.train.n_sessions_per_batch
    if FAMILY[cfg.model.model_class].background:
        sessions_with_train = len(set(data.session[data.index["train"]].tolist()))
        if sessions_with_train < s:
            raise ConfigError(
                f"train.n_sessions_per_batch = {s}: msps-vae needs at least that many sessions (data "
                f"files) with training trials, but the data has {sessions_with_train}"
            )


class Trainer:
    def __init__(self, cfg: FitConfig, data: FrameData, device: str | None = None) -> None:
        self.cfg = cfg
        self.data = data
        check_fits_data(cfg, data)
        self.device = resolve_device(device or cfg.train.device)
        self.precision = resolve_precision(cfg.train.precision, self.device)
        if self.device.type == "cpu":
            keep_large_allocations()
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        self.model = build_model(cfg, data.frame_shape, data.n_labels).to(self.device)
        # channels-last convolutions are markedly faster on CPUs (oneDNN) and GPUs alike
        self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=cfg.train.lr,
            weight_decay=cfg.train.weight_decay,
            amsgrad=True,
        )
        order_seed, noise_seed = np.random.SeedSequence(cfg.train.seed_train).generate_state(2)
        self.order_rng = torch.Generator().manual_seed(int(order_seed))
        self.noise_rng = torch.Generator(self.device).manual_seed(int(noise_seed))
        self.epoch = 0  # the next epoch to run
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None
        self.best_val_loss = math.inf
        self.status = "running"

    # -- training ------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _weights(self, epoch: int, full: bool = False) -> LossWeights:
        loss = self.cfg.loss
        return weights_for_epoch(
            epoch,
            loss.alpha,
            loss.beta,
            0 if full else loss.anneal_epochs,
            loss.sigma_x,
            delta=loss.delta,
            msp_alpha=loss.msp_alpha,
        )

    def _terms(self, batch: Any, weights: LossWeights, n_data: int, sample: bool) -> tuple[Any, Any]:
        model = self.model
        with self._autocast():
            out = model(batch.frames, self.noise_rng if sample else None, labels=batch.labels)
        # the loss is always computed in float32
        recon, mu, logvar, z = out.frames.float(), out.mu.float(), out.logvar.float(), out.z.float()
        terms = family_loss(
            model.model_class,
            batch.frames,
            recon,
            batch.labels,
            None if out.labels is None else out.labels.float(),
            batch.label_mask,
            batch.pixel_mask,
            z,
            mu,
            logvar,
            n_labels=self.data.n_labels,
            n_background=model.n_background,
            n_data=n_data,
            weights=weights,
            session=batch.session,
            projection=None if model.projection is None else model.projection.weight.float(),
        )
        return terms, out

    def _accumulate(self, acc: EpochAccumulator, terms: Any, out: Any, batch: Any) -> None:
        acc.add(terms, batch.frames, out.frames, batch.labels, out.labels, batch.label_mask, batch.pixel_mask)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        weights = self._weights(epoch)
        n_data = self.data.n_frames("train")
        acc = EpochAccumulator(self.data.n_labels, self.device)
        if FAMILY[self.cfg.model.model_class].background:
            batches = self.data.session_batches(
                self.cfg.train.batch_size, self.cfg.train.n_sessions_per_batch, self.order_rng
            )
        else:
            batches = self.data.train_batches(self.cfg.train.batch_size, self.order_rng)
        for idx in batches:
            batch = self.data.batch(idx, self.device)
            terms, out = self._terms(batch, weights, n_data, sample=True)
            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            self.optimizer.step()
            self._accumulate(acc, terms, out, batch)
        return acc.result()

    @torch.no_grad()
    def _evaluate(self, split: str, keep_latents: bool = False) -> tuple[EpochAccumulator, np.ndarray]:
        """One pass over ``split`` with the posterior means and full weights; also returns the
        means (N, L) when ``keep_latents``."""
        self.model.eval()
        weights = self._weights(0, full=True)
        n_data = self.data.n_frames(split)
        acc = EpochAccumulator(self.data.n_labels, self.device)
        latents = []
        for idx in self.data.eval_batches(split, self.cfg.train.batch_size):
            batch = self.data.batch(idx, self.device)
            terms, out = self._terms(batch, weights, n_data, sample=False)
            self._accumulate(acc, terms, out, batch)
            if keep_latents:
                latents.append(out.mu.float().cpu().numpy())
        empty = np.zeros((0, self.model.n_codes), np.float32)
        return acc, np.concatenate(latents) if latents else empty

    def evaluate(self, split: str) -> dict[str, float]:
        """Loss terms and errors on ``split`` with the posterior means and full weights."""
        return self._evaluate(split)[0].result()

    def run_epoch(self) -> EpochResult:
        epoch = self.epoch
        start = time.perf_counter()
        weights = self._weights(epoch)
        train = self.train_epoch(epoch)
        val = self.evaluate("val")
        finite = math.isfinite(train["loss"]) and math.isfinite(val["loss"])
        is_best = finite and val["loss"] < self.best_val_loss
        if is_best:
            self.best_val_loss = val["loss"]
            self.best_epoch = epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        self.status = "running" if finite else "diverged"
        result = EpochResult(
            epoch=epoch,
            train=train,
            val=val,
            alpha=weights.alpha,
            beta_e=weights.beta_e,
            k_e=weights.k_e,
            is_best=is_best,
            seconds=time.perf_counter() - start,
            status=self.status,
        )
        self.history.append(result.flat())
        self.epoch += 1
        return result

    def epochs(self) -> Iterator[EpochResult]:
        """Run the remaining epochs, one result each; stops early if the fit diverges."""
        while self.epoch < self.cfg.train.epochs and self.status != "diverged":
            yield self.run_epoch()

    @property
    def done(self) -> bool:
        return self.status == "diverged" or self.epoch >= self.cfg.train.epochs

    # -- the outcome ----------------------------------------------------------------------
    def load_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    @torch.no_grad()
    def latents(self, split: str) -> np.ndarray:
        """Posterior means (N, L_enc) of every frame of ``split``, in order (the encoder's output)."""
        self.model.eval()
        chunks = []
        for idx in self.data.eval_batches(split, self.cfg.train.batch_size):
            with self._autocast():
                mu, _ = self.model.encoder(self.data.batch(idx, self.device).frames)
            chunks.append(mu.float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.model.n_codes), np.float32)

    @torch.no_grad()
    def unsupervised_latents(self, latents: np.ndarray) -> np.ndarray:
        """The unsupervised latents (N, U) of encoder means (N, L_enc)."""
        mu = torch.as_tensor(latents).to(self.device)
        return self.model.unsupervised(mu).float().cpu().numpy()

    def finish(self) -> FitSummary:
        """Load the best weights and compute the per-fit metrics with them: one pass over
        each of val, test and train."""
        status = "diverged" if self.status == "diverged" else "completed"
        if self.best_state is None:
            return FitSummary(status, self.precision, self.epoch, None, {})
        self.load_best()
        metrics: dict[str, float] = {}
        names = self.data.label_stats.names
        for split in ("val", "test"):
            acc, latents = self._evaluate(split, keep_latents=split == "test")
            result = acc.result()
            for key in ("loss", "pixel_mse", "label_mse", "label_r2"):
                metrics[f"{split}_{key}"] = result[key]
            if split == "val":
                for key in ("mi", "tc", "dwkl"):
                    metrics[f"val_{key}"] = result[key]
            for name, r2 in zip(names, acc.r2.per_column(), strict=True):
                metrics[f"{split}_label_r2_{name}"] = float(r2)
            if split == "test":
                metrics["test_abs_corr_u01"] = abs_corr_first_two(self.unsupervised_latents(latents))
        train_u = self.unsupervised_latents(self.latents("train"))
        metrics["train_mean_abs_corr_u"] = mean_abs_pairwise_corr(train_u)
        n_sessions = self.data.n_sessions
        if n_sessions >= 2:
            index = self.data.index
            val_u = self.unsupervised_latents(self.latents("val"))
            metrics["val_session_acc"] = session_accuracy(
                train_u,
                self.data.session[index["train"]].numpy(),
                val_u,
                self.data.session[index["val"]].numpy(),
                n_sessions,
            )
            metrics["session_chance"] = 1.0 / n_sessions
        return FitSummary(status, self.precision, self.epoch, self.best_epoch, metrics)

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue; only tensors and plain containers (weights_only-safe)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_json(),
            "epoch": self.epoch,
            "status": self.status,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "order_rng": self.order_rng.get_state(),
            "noise_rng": self.noise_rng.get_state(),
            "best_state": self.best_state,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unknown checkpoint format {state.get('format')!r}")
        if state["config"] != self.cfg.to_json():
            from psvae.errors import ConfigError

            raise ConfigError("the checkpoint was written with a different config; refusing to resume it")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.order_rng.set_state(state["order_rng"])
        self.noise_rng.set_state(state["noise_rng"])
        self.epoch = int(state["epoch"])
        self.status = str(state["status"])
        self.best_state = state["best_state"]
        self.best_epoch = state["best_epoch"]
        self.best_val_loss = float(state["best_val_loss"])
        self.history = list(state["history"])

    def save_checkpoint(self, path: str | Path) -> None:
        """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def restore(self, path: str | Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=True)
        # generator states must live on the CPU
        state["order_rng"] = state["order_rng"].cpu()
        state["noise_rng"] = state["noise_rng"].cpu()
        if state["best_state"] is not None:
            state["best_state"] = {k: v.cpu() for k, v in state["best_state"].items()}
        self.load_state_dict(state)

    def copy_best_model(self) -> PSVAE:
        """A CPU copy of the network with the best weights (for export)."""
        model = copy.deepcopy(self.model).to("cpu")
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        return model.eval()
