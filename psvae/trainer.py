"""Fitting one PS-VAE (``docs/model.md`` §5). Plain PyTorch; knows nothing about Ray.

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
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psvae.config import FitConfig
from psvae.data import FrameData
from psvae.errors import ConfigError
from psvae.family import FAMILY
from psvae.files import atomic_path, jsonable
from psvae.losses import SIGMA_X_FLOOR, LossWeights, calibrated_sigma_x, family_loss, weights_for_epoch
from psvae.metrics import (
    EpochAccumulator,
    abs_corr_first_two,
    latent_summary,
    mean_abs_pairwise_corr,
    session_accuracy,
)
from psvae.model import PSVAE
from psvae.runtime import keep_large_allocations, probe_key, probe_steps, resolve_device, resolve_precision

CHECKPOINT_FORMAT = 1
THREAD_CHECK_S = 0.5  # the least time between two looks at a fit's thread budget


@dataclass(frozen=True)
class EpochResult:
    """What one epoch produced. ``train`` and ``val`` map metric names to numbers."""

    epoch: int  # 0-based
    train: dict[str, float]
    val: dict[str, float]
    alpha: float
    beta_e: float
    k_e: float
    sigma_x: float  # in force: the number, or the calibrated value (auto: mean over the epoch's batches)
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
            sigma_x=self.sigma_x,
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
    label_names: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The one ``summary.json`` shape, written by ``psvae fit`` into its folder and by a
        search trial into its last checkpoint: status, precision, epochs run, best epoch, the
        label names and the best checkpoint's metrics (non-finite values as null)."""
        return jsonable(
            {
                "status": self.status,
                "precision": self.precision,
                "epochs_run": self.epochs_run,
                "best_epoch": self.best_epoch,
                "label_names": list(self.label_names),
                "metrics": self.metrics,
            }
        )


def comparable_loss(stats: dict[str, float], sigma: float, alpha: float) -> float:
    """A validation pass's loss scored at one ``sigma`` (its constants dropped):
    (pixel_sse + alpha * label_sse) / (2 sigma^2) + pixels * ln(sigma) + others, from the pass's
    per-frame ``pixel_sse``, ``pixels``, ``label_sse`` and ``others`` (every other term at full
    weight).

    A calibrated sigma_x shrinks as a fit improves, and the labels' term, weighted
    alpha / sigma_x^2, grows with it: the validation losses of two epochs, each at its own
    sigma_x, favour the earlier one whatever it reconstructs. Two passes scored at the same
    sigma_x compare what they explain (docs/latents.md).
    """
    weighted_sse = stats["pixel_sse"] + alpha * stats["label_sse"]
    return weighted_sse / (2 * sigma**2) + stats["pixels"] * math.log(sigma) + stats["others"]


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
        self._precision: str | None = None  # resolved at the first step (``auto`` probes), or restored
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
        self.best_stats: dict[str, float] | None = None  # the best epoch's _selection_stats
        self.status = "running"
        self.epoch_sigma_x = math.nan  # sigma_x of the last training epoch (auto: its batches' mean)
        self._variance: float | None = None  # the training frames' variance, once computed
        self._last_logvar = np.zeros((0, 0), np.float32)
        self.thread_budget: Callable[[], int | None] | None = None
        """Where a fit on the CPU learns, while it runs, how many threads it may use now (a
        search gives a stage's last fits the CPUs its finished ones left idle); its None means
        ``train.num_threads``. See :meth:`_follow_thread_budget`."""
        self._threads_checked = -math.inf

    # -- precision -----------------------------------------------------------------------
    @property
    def precision(self) -> str:
        """The precision the fit trains in, "float32" or "bf16": ``train.precision`` as set, or
        for ``auto`` the faster of the two for this network, batch and device at the fit's
        start (a short probe on a copy of the network, :func:`psvae.runtime.resolve_precision`).
        A restored fit keeps the precision it started in."""
        if self._precision is None:
            shape = "x".join(str(n) for n in self.data.frame_shape)
            model, batch = self.cfg.model, self.cfg.train.batch_size
            what = f"{model.model_class}|{model.channels}|{shape}|batch={batch}"
            self._precision = resolve_precision(
                self.cfg.train.precision, self.device, self._probe, probe_key(self.device, what)
            )
        return self._precision

    def _probe(self) -> dict[str, list[float]]:
        """CPU seconds of training steps in float32 and bf16 on a copy of the network and its
        optimizer, one batch of training frames: the fit's own network, RNGs and order are not
        touched. The loss is a stand-in (the real one is computed in float32 either way)."""
        model = copy.deepcopy(self.model).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=self.cfg.train.lr, amsgrad=True)
        index = self.data.index["train"][: self.cfg.train.batch_size]
        batch = self.data.batch(index, self.device)
        generator = torch.Generator(self.device).manual_seed(0)

        def step(precision: str) -> None:
            autocast = (
                torch.autocast(self.device.type, dtype=torch.bfloat16)
                if precision == "bf16"
                else contextlib.nullcontext()
            )
            with autocast:
                out = model(batch.frames, generator, labels=batch.labels)
            loss = (out.frames.float() - batch.frames).square().mean() + out.mu.float().square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)

        return probe_steps(step)  # the copies go with this frame

    # -- training ------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _weights(self, epoch: int, full: bool = False) -> LossWeights:
        """The weights of ``epoch``; sigma_x is the epoch's (NaN under ``auto``, where every
        batch calibrates its own, see :meth:`_terms`)."""
        loss = self.cfg.loss
        return weights_for_epoch(
            epoch,
            loss.alpha,
            loss.beta,
            0 if full else loss.anneal_epochs,
            self.sigma_x_for(epoch),
            delta=loss.delta,
            msp_alpha=loss.msp_alpha,
        )

    def sigma_x_for(self, epoch: int) -> float:
        """sigma_x in force in ``epoch`` (docs/latents.md): the configured number; for
        ``auto-epoch`` the root of the previous epoch's training pixel MSE (the first epoch: of
        the training frames' mean squared deviation from their mean frame), at least one grey
        level; for ``auto`` NaN, as each batch is scored with its own MSE."""
        sigma = self.cfg.loss.sigma_x
        if not isinstance(sigma, str):
            return float(sigma)
        if sigma == "auto":
            return math.nan
        mse = self.history[epoch - 1]["train_pixel_mse"] if epoch > 0 else self._frame_variance()
        return math.sqrt(max(float(mse), SIGMA_X_FLOOR**2))

    def _frame_variance(self) -> float:
        """Mean squared deviation of the training frames from their mean frame (unmasked pixels):
        the pixel MSE of a decoder that ignores its latents."""
        if self._variance is None:
            index = self.data.index["train"]
            total = torch.zeros(self.data.frame_shape, dtype=torch.float64)
            total_sq = torch.zeros(self.data.frame_shape, dtype=torch.float64)
            for start in range(0, len(index), 512):
                x = self.data.frames[index[start : start + 512]].double() / 255.0
                total += x.sum(0)
                total_sq += x.square().sum(0)
            n = max(len(index), 1)
            per_pixel = total_sq / n - (total / n).square()
            if self.data.pixel_mask is not None:
                mask = self.data.pixel_mask[index].double().mean(0).clamp_min(0)
                per_pixel = per_pixel * (mask > 0)
                self._variance = float(per_pixel.sum() / (mask > 0).sum().clamp_min(1))
            else:
                self._variance = float(per_pixel.mean())
        return self._variance

    def _terms(self, batch: Any, weights: LossWeights, n_data: int, sample: bool) -> tuple[Any, Any, Any]:
        """The loss terms, the network's output and the sigma_x the frames were scored with."""
        model = self.model
        with self._autocast():
            out = model(batch.frames, self.noise_rng if sample else None, labels=batch.labels)
        # the loss is always computed in float32
        recon, mu, logvar, z = out.frames.float(), out.mu.float(), out.logvar.float(), out.z.float()
        if self.cfg.loss.sigma_x == "auto":
            sigma = calibrated_sigma_x(batch.frames, recon, batch.pixel_mask)
            weights = dataclasses.replace(weights, sigma_x=sigma)
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
        return terms, out, weights.sigma_x

    @property
    def threads(self) -> int:
        """The threads the fit runs with now."""
        return torch.get_num_threads()

    def _follow_thread_budget(self) -> None:
        """Take the thread count :attr:`thread_budget` gives, looked at between batches at most
        every THREAD_CHECK_S seconds. Only once the precision is settled: the precision probe's
        answer is kept per thread count, and a change before it would probe again. Threads change
        how fast a fit runs, not what it fits (the last digits may differ, as between machines)."""
        if self.thread_budget is None or self._precision is None or self.device.type != "cpu":
            return
        now = time.monotonic()
        if now - self._threads_checked < THREAD_CHECK_S:
            return
        self._threads_checked = now
        wanted = self.thread_budget() or self.cfg.train.num_threads
        if wanted and wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)

    def _accumulate(self, acc: EpochAccumulator, terms: Any, out: Any, batch: Any) -> None:
        acc.add(terms, batch.frames, out.frames, batch.labels, out.labels, batch.label_mask, batch.pixel_mask)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training batches; also sets :attr:`epoch_sigma_x`."""
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
        sigma_sum: Any = 0.0
        n_batches = 0
        for idx in batches:
            self._follow_thread_budget()
            batch = self.data.batch(idx, self.device)
            terms, out, sigma = self._terms(batch, weights, n_data, sample=True)
            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            self.optimizer.step()
            self._accumulate(acc, terms, out, batch)
            sigma_sum = sigma_sum + sigma
            n_batches += 1
        self.epoch_sigma_x = float(sigma_sum / max(n_batches, 1))
        return acc.result()

    @torch.no_grad()
    def _evaluate(
        self, split: str, keep_latents: bool = False, epoch: int | None = None
    ) -> tuple[EpochAccumulator, np.ndarray]:
        """One pass over ``split`` with the posterior means and full weights (sigma_x of
        ``epoch``, default the current one); also returns the means (N, L) when
        ``keep_latents`` (their log-variances in ``_last_logvar``)."""
        self.model.eval()
        weights = self._weights(self.epoch if epoch is None else epoch, full=True)
        n_data = self.data.n_frames(split)
        acc = EpochAccumulator(self.data.n_labels, self.device)
        latents, logvars = [], []
        for idx in self.data.eval_batches(split, self.cfg.train.batch_size):
            self._follow_thread_budget()
            batch = self.data.batch(idx, self.device)
            terms, out, _ = self._terms(batch, weights, n_data, sample=False)
            self._accumulate(acc, terms, out, batch)
            if keep_latents:
                latents.append(out.mu.float().cpu().numpy())
                logvars.append(out.logvar.float().cpu().numpy())
        empty = np.zeros((0, self.model.n_codes), np.float32)
        self._last_logvar = np.concatenate(logvars) if logvars else empty
        return acc, np.concatenate(latents) if latents else empty

    def evaluate(self, split: str) -> dict[str, float]:
        """Loss terms and errors on ``split`` with the posterior means and full weights."""
        return self._evaluate(split)[0].result()

    def _selection_stats(self, acc: EpochAccumulator, val: dict[str, float]) -> dict[str, float]:
        """What :func:`comparable_loss` needs of a validation pass: its per-frame squared
        errors and every other term of the objective at full weight."""
        loss = self.cfg.loss
        others = val["kl_s"] + val["mi"] + loss.beta * (val["tc"] + val["kl_u"]) + val["dwkl"]
        return {**acc.per_frame_errors(), "others": others + loss.delta * val["triplet"]}

    def _is_better(self, val: dict[str, float], stats: dict[str, float]) -> bool:
        """Whether this epoch's validation pass beats the best so far: by the validation loss,
        or under a calibrated sigma_x both scored at this epoch's sigma_x (:func:`comparable_loss`)."""
        calibrated = isinstance(self.cfg.loss.sigma_x, str)
        if not calibrated or not FAMILY[self.cfg.model.model_class].variational or self.best_stats is None:
            return val["loss"] < self.best_val_loss
        sigma = self.epoch_sigma_x
        alpha = self.cfg.loss.alpha
        return comparable_loss(stats, sigma, alpha) < comparable_loss(self.best_stats, sigma, alpha)

    def run_epoch(self) -> EpochResult:
        epoch = self.epoch
        start = time.perf_counter()
        weights = self._weights(epoch)
        train = self.train_epoch(epoch)
        acc, _ = self._evaluate("val")
        val = acc.result()
        stats = self._selection_stats(acc, val)
        finite = math.isfinite(train["loss"]) and math.isfinite(val["loss"])
        is_best = finite and self._is_better(val, stats)
        if is_best:
            self.best_val_loss = val["loss"]
            self.best_stats = stats
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
            sigma_x=self.epoch_sigma_x,
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
        names = tuple(self.data.label_stats.names)
        if self.best_state is None:
            return FitSummary(status, self.precision, self.epoch, None, {}, names)
        self.load_best()
        best = self.best_epoch
        assert best is not None
        metrics: dict[str, float] = {}
        val_mu = val_logvar = np.zeros((0, self.model.n_codes), np.float32)
        for split in ("val", "test"):
            acc, latents = self._evaluate(split, keep_latents=True, epoch=best)
            result = acc.result()
            for key in ("loss", "pixel_mse", "label_mse", "label_r2"):
                metrics[f"{split}_{key}"] = result[key]
            if split == "val":
                for key in ("mi", "tc", "dwkl"):
                    metrics[f"val_{key}"] = result[key]
                val_mu, val_logvar = latents, self._last_logvar
            for name, r2 in zip(names, acc.r2.per_column(), strict=True):
                metrics[f"{split}_label_r2_{name}"] = float(r2)
            if split == "test":
                metrics["test_abs_corr_u01"] = abs_corr_first_two(self.unsupervised_latents(latents))
        train_u = self.unsupervised_latents(self.latents("train"))
        val_u = self.unsupervised_latents(val_mu)
        metrics["train_mean_abs_corr_u"] = mean_abs_pairwise_corr(train_u)
        metrics["sigma_x"] = self._best_sigma_x(best)
        metrics.update(self._latent_metrics(train_u, val_u, val_mu, val_logvar, metrics))
        n_sessions = self.data.n_sessions
        if n_sessions >= 2:
            index = self.data.index
            metrics["val_session_acc"] = session_accuracy(
                train_u,
                self.data.session[index["train"]].numpy(),
                val_u,
                self.data.session[index["val"]].numpy(),
                n_sessions,
            )
            metrics["session_chance"] = 1.0 / n_sessions
        return FitSummary(status, self.precision, self.epoch, self.best_epoch, metrics, names)

    def _best_sigma_x(self, best: int) -> float:
        """The sigma_x of the best epoch: configured, or as calibrated then (``auto``: the mean
        over that epoch's training batches)."""
        if self.cfg.loss.sigma_x == "auto":
            return float(self.history[best]["sigma_x"])
        return self.sigma_x_for(best)

    def _latent_metrics(
        self,
        train_u: np.ndarray,
        val_u: np.ndarray,
        val_mu: np.ndarray,
        val_logvar: np.ndarray,
        metrics: dict[str, float],
    ) -> dict[str, float]:
        """Whether the unsupervised latents carry anything (docs/latents.md): per dimension the
        variance of the posterior means over the validation frames and their KL to the prior,
        how many are active, the labels they leak, and MI/TC/DWKL net of their constants."""
        index = self.data.index
        n_u = train_u.shape[1]
        variational = FAMILY[self.cfg.model.model_class].variational
        # the unsupervised latents are the encoder's last U outputs in every variational class
        logvar_u = val_logvar[:, val_logvar.shape[1] - n_u :] if variational else None
        summary = latent_summary(
            train_u,
            self.data.labels[index["train"]].numpy(),
            self.data.label_mask[index["train"]].numpy(),
            val_u,
            self.data.labels[index["val"]].numpy(),
            self.data.label_mask[index["val"]].numpy(),
            val_mu_u=val_u,
            val_logvar_u=logvar_u,
        )
        out = summary.flat()
        if FAMILY[self.cfg.model.model_class].tc_decomposition:
            log_n = math.log(max(self.data.n_frames("val"), 1))
            out["val_mi_net"] = metrics["val_mi"] - log_n
            out["val_tc_net"] = metrics["val_tc"] - (n_u - 1) * log_n
            out["val_dwkl_net"] = metrics["val_dwkl"] + n_u * log_n
        return out

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
            "best_stats": self.best_stats,
            "history": self.history,
            "precision": self.precision,
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
        self.best_stats = state.get("best_stats")
        self.history = list(state["history"])
        if state.get("precision") in ("float32", "bf16"):
            self._precision = str(state["precision"])  # a fit goes on in the precision it began in

    def save_checkpoint(self, path: str | Path) -> None:
        """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
        with atomic_path(Path(path)) as tmp:
            torch.save(self.state_dict(), tmp)

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
