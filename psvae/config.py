"""One typed configuration for a fit.

A fit is described by four frozen dataclasses (data, model, loss, train) gathered in
:class:`FitConfig`. Every field also has a flat dotted name (``loss.alpha``) that is the key
in YAML files, in search spaces and in result tables. Values are checked when the objects are
built; unknown keys are errors, with a suggestion when the key looks like a typo.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psvae import reference, yaml_io
from psvae.errors import ConfigError
from psvae.family import DEFAULT_CLASS, FAMILY, MODEL_CLASSES

PRECISIONS = ("auto", "float32", "bf16")
SEED_MAX = 2**64 - 1  # torch.manual_seed takes at most 64 bits; numpy's seeds are non-negative
INT_MAX = 2**63 - 1  # torch and numpy hold counts and sizes as signed 64-bit integers
DEVICES = ("auto", "cpu", "cuda")
# loss.sigma_x as a word: a calibrated decoder (docs/latents.md). "auto": every batch's own
# pixel MSE, as the optimal-sigma VAE of Rybkin et al. 2021; "auto-epoch": the previous epoch's
# training pixel MSE, the first epoch's from the frames' variance about their mean.
SIGMA_X_MODES = ("auto", "auto-epoch")
SigmaX = float | str  # the type of loss.sigma_x: a number > 0 or one of SIGMA_X_MODES


def parse_split(text: str) -> tuple[int, int, int, int]:
    """Parse a ``train;val;test;gap`` trial-block split such as ``"8;1;1;0"``."""
    parts = str(text).split(";")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise ValueError("expected four non-negative integers 'train;val;test;gap', e.g. '8;1;1;0'")
    n_train, n_val, n_test, n_gap = (int(p) for p in parts)
    if n_train == 0 or n_val == 0 or n_test == 0:
        raise ValueError("train, val and test counts must each be at least 1")
    return n_train, n_val, n_test, n_gap


@dataclass(frozen=True)
class DataConfig:
    """Which frames to train on and how trials are split."""

    split: str = "8;1;1;0"  # trial blocks: train;val;test;gap
    split_seed: int = 0

    def __post_init__(self) -> None:
        _check_numbers("data", self)
        try:
            parse_split(self.split)
        except ValueError as err:
            raise ConfigError(f"data.split = {self.split!r}: {err}") from None


@dataclass(frozen=True)
class ModelConfig:
    """The network. The defaults are the paper's architecture."""

    model_class: str = DEFAULT_CLASS  # one of psvae.family.MODEL_CLASSES
    n_unsupervised: int = 2  # U; for vae, beta-tcvae and cond-ae all their latents
    n_background: int = 3  # B, the background latents of msps-vae (ignored by the other classes)
    channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    strides: tuple[int, ...] = (2, 2, 2, 2, 5)
    kernel_size: int = 5

    def __post_init__(self) -> None:
        _check_numbers("model", self)
        _choice("model.model_class", self.model_class, MODEL_CLASSES)
        _at_least("model.n_unsupervised", self.n_unsupervised, 0)
        _at_least("model.n_background", self.n_background, 0)
        kind = FAMILY[self.model_class]
        if kind.background and self.n_background < 1:
            raise ConfigError(
                f"model.n_background = 0: {self.model_class} needs at least one background latent"
            )
        if self.n_unsupervised < kind.min_unsupervised:
            raise ConfigError(
                f"model.n_unsupervised = {self.n_unsupervised}: {self.model_class} needs at least "
                f"{kind.min_unsupervised} latent"
            )
        _at_least("model.kernel_size", self.kernel_size, 1)
        if len(self.channels) != len(self.strides) or not self.channels:
            raise ConfigError(
                f"model.channels = {list(self.channels)} and model.strides = "
                f"{list(self.strides)}: need the same, non-zero number of layers"
            )
        for name, values in (("model.channels", self.channels), ("model.strides", self.strides)):
            if any(v < 1 for v in values):
                raise ConfigError(f"{name} = {list(values)}: every entry must be at least 1")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the six-term PS-VAE objective (``docs/model.md`` §4)."""

    alpha: float = 1000.0  # weight of the label log-likelihood; never annealed
    beta: float = 1.0  # weight of the total correlation of the unsupervised latents
    anneal_epochs: int = 100  # k_e ramps 0 -> 1 over this many epochs; beta_e = beta * k_e
    # standard deviation of the Gaussian frame likelihood, or a calibration of SIGMA_X_MODES
    # (1.0 is the reference's); the label term is weighted alpha / sigma_x^2 (docs/latents.md)
    sigma_x: SigmaX = "auto"
    delta: float = 50.0  # msps-vae: weight of the triplet loss on the background means
    msp_alpha: float = 1.0  # cond-ae-msp: weight of the label and projection terms

    def __post_init__(self) -> None:
        _check_numbers("loss", self)
        _at_least("loss.alpha", self.alpha, 0)
        _at_least("loss.beta", self.beta, 0)
        _at_least("loss.delta", self.delta, 0)
        _at_least("loss.msp_alpha", self.msp_alpha, 0)
        _at_least("loss.anneal_epochs", self.anneal_epochs, 0)
        if isinstance(self.sigma_x, str):
            _choice("loss.sigma_x", self.sigma_x, SIGMA_X_MODES)
        elif not self.sigma_x > 0:
            raise ConfigError(
                f"loss.sigma_x = {self.sigma_x}: must be greater than 0 "
                f"(or one of {', '.join(SIGMA_X_MODES)})"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, seeds and hardware."""

    epochs: int = 300
    batch_size: int = 128  # frames per minibatch (M); the MI/TC/DWKL estimates are biased for small M
    lr: float = 1e-4
    weight_decay: float = 0.0
    seed_model: int = 0  # network initialisation
    seed_train: int = 0  # minibatch order and the reparameterisation noise
    device: str = "auto"
    # "bf16": the network runs under bfloat16 autocast (the loss stays float32); "auto": where
    # the device computes bfloat16 natively, the cheaper of the two by a short probe at the fit's
    # start (psvae.runtime.resolve_precision), else "float32"
    precision: str = "auto"
    num_threads: int = 0  # CPU threads for torch; 0 = leave torch's default
    # msps-vae: each training batch holds frames of this many distinct sessions (S >= 2)
    n_sessions_per_batch: int = 2

    def __post_init__(self) -> None:
        _check_numbers("train", self)
        _at_least("train.epochs", self.epochs, 1)
        _at_least("train.batch_size", self.batch_size, 2)
        if not self.lr > 0:
            raise ConfigError(f"train.lr = {self.lr}: must be greater than 0")
        _at_least("train.weight_decay", self.weight_decay, 0)
        _choice("train.device", self.device, DEVICES)
        _choice("train.precision", self.precision, PRECISIONS)
        _at_least("train.num_threads", self.num_threads, 0)
        _at_least("train.n_sessions_per_batch", self.n_sessions_per_batch, 2)


@dataclass(frozen=True)
class FitConfig:
    """Everything that determines one fit (besides the data files themselves)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.loss.anneal_epochs >= self.train.epochs:
            raise ConfigError(
                f"loss.anneal_epochs = {self.loss.anneal_epochs}: must be below train.epochs = "
                f"{self.train.epochs}, or beta never reaches its value"
            )
        s = self.train.n_sessions_per_batch
        if FAMILY[self.model.model_class].background and self.train.batch_size < 2 * s:
            raise ConfigError(
                f"train.batch_size = {self.train.batch_size}: needs at least two frames from each of "
                f"the train.n_sessions_per_batch = {s} sessions"
            )

    # -- flat dotted view ---------------------------------------------------------------
    def flat(self) -> dict[str, Any]:
        """The config as ``{"loss.alpha": 1000.0, ...}``; tuples become lists."""
        out: dict[str, Any] = {}
        for section in dataclasses.fields(self):
            sub = getattr(self, section.name)
            for f in dataclasses.fields(sub):
                value = getattr(sub, f.name)
                out[f"{section.name}.{f.name}"] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **dotted: Any) -> FitConfig:
        """A copy with some dotted keys changed: ``cfg.replace(**{"loss.beta": 5})``."""
        merged = self.flat()
        merged.update(dotted)
        return FitConfig.from_mapping(merged)

    def to_json(self) -> str:
        return json.dumps(self.flat(), indent=2, sort_keys=True)

    @staticmethod
    def keys() -> list[str]:
        return list(FitConfig().flat())

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], source: str = "config") -> FitConfig:
        """Build from nested (``{"loss": {"alpha": 50}}``) or dotted (``{"loss.alpha": 50}``) keys."""
        flat = _flatten(mapping, source)
        sections: dict[str, dict[str, Any]] = {}
        hints = typing.get_type_hints(cls)
        for key, value in flat.items():
            section_name, _, field_name = key.partition(".")
            section_cls = hints.get(section_name)
            fields = {f.name: f for f in dataclasses.fields(section_cls)} if section_cls else {}
            if field_name not in fields:
                close = difflib.get_close_matches(key, cls.keys(), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{source}: unknown key {key!r}{hint}")
            field_type = typing.get_type_hints(section_cls)[field_name]
            sections.setdefault(section_name, {})[field_name] = _coerce(source, key, value, field_type)
        try:
            return cls(**{name: hints[name](**values) for name, values in sections.items()})
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_layers(cls, layers: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[FitConfig, list[str]]:
        """Build from ``(source, keys)`` layers over the defaults, each overriding the ones before
        (the command line's order: defaults, config file, ``--set``). Each layer is checked as it
        is applied, and its errors name its source.

        A layer that shortens ``train.epochs`` without setting ``loss.anneal_epochs`` scales the
        anneal epochs in force with it (:func:`scaled_anneal`: 100 of 300 becomes a third of the
        new epochs) instead of refusing a config whose annealing would outlast the fit. Returns
        the config and one note per such change, for the caller to show (this module prints
        nothing).
        """
        cfg = cls()
        notes: list[str] = []
        for source, mapping in layers:
            layer = _flatten(mapping, source)
            merged = {**cfg.flat(), **layer}
            epochs, before = layer.get("train.epochs"), cfg.train
            note = None
            if (
                "loss.anneal_epochs" not in layer
                and isinstance(epochs, int)
                and not isinstance(epochs, bool)
                and 1 <= epochs < before.epochs
                and cfg.loss.anneal_epochs > 0
            ):
                anneal = scaled_anneal(cfg.loss.anneal_epochs, before.epochs, epochs)
                merged["loss.anneal_epochs"] = anneal
                note = (
                    f"{source}: train.epochs = {epochs}: loss.anneal_epochs scaled with it to {anneal} "
                    f"(was {cfg.loss.anneal_epochs} of {before.epochs} epochs); set loss.anneal_epochs "
                    "to choose another value"
                )
            cfg = cls.from_mapping(merged, source=source)
            if note is not None:
                notes.append(note)
        return cfg, notes

    @classmethod
    def from_yaml(cls, path: str | Path, n_labels: Callable[[], int] | None = None) -> FitConfig:
        """Read a YAML (or JSON) file of our keys or of the reference's ``ae_model.json`` keys
        (see :mod:`psvae.reference`); ``n_labels`` counts the data's labels when the file gives
        ``n_ae_latents``. The keys are taken as they are; the command line reads files with
        :func:`read_config_file` and :meth:`from_layers`, which also scales the anneal epochs of
        a shortened schedule."""
        return cls.from_mapping(read_config_file(path, n_labels), source=str(path))


def scaled_anneal(anneal_epochs: int, epochs: int, new_epochs: int) -> int:
    """``anneal_epochs`` of ``epochs`` scaled to a schedule of ``new_epochs``: the same fraction,
    rounded, at least 1 when there was any annealing and at most ``new_epochs - 1`` (the anneal
    must end before the fit does)."""
    if anneal_epochs == 0 or new_epochs <= 1:
        return 0
    return max(1, min(round(anneal_epochs * new_epochs / epochs), new_epochs - 1))


def read_config_file(path: str | Path, n_labels: Callable[[], int] | None = None) -> dict[str, Any]:
    """The keys of a YAML (or JSON) fit-config file, the reference's keys turned into ours
    (see :meth:`FitConfig.from_yaml`); not yet checked against the fields."""
    path = Path(path)
    loaded = yaml_io.read(path, "config")
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
    if reference.is_reference(loaded):
        k = n_labels() if "n_ae_latents" in loaded and n_labels is not None else None
        fixed, sweeps = reference.from_reference(loaded, str(path), k)
        if sweeps:
            key = next(iter(sweeps))
            raise ConfigError(
                f"{path}: {key} = {sweeps[key]!r}: a list is a sweep; give it to psvae search, "
                "or one value to fit"
            )
        loaded = fixed
    return dict(loaded)


def _flatten(mapping: Mapping[str, Any], source: str, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: key {key!r} is not a string")
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, source, prefix=f"{dotted}."))
        else:
            out[dotted] = value
    return out


def _coerce(source: str, key: str, value: Any, field_type: Any) -> Any:
    """Check ``value`` against the field's annotation; ints are accepted where floats are."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key} = {value!r}: expected {expected}")

    if field_type == SigmaX:  # loss.sigma_x: a word of SIGMA_X_MODES, else a number
        if isinstance(value, str):
            return value
        field_type = float
    origin = typing.get_origin(field_type)
    if origin is tuple:
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise bad("a list of integers")
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        raise bad(str(field_type))
    if field_type is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if field_type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if field_type is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            raise bad("a finite number") from None
    if field_type is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    raise bad(str(field_type))  # pragma: no cover - every field type is handled above


def is_seed(field_name: str) -> bool:
    """Seed fields are named so: ``split_seed``, ``seed_model``, ``seed_train``."""
    return "seed" in field_name.split("_")


def _check_numbers(section: str, obj: Any) -> None:
    """Check every number of a section by its kind, so that a field added later is covered too:
    floats are finite, seeds lie in 0 .. 2**64 - 1, other integers fit in 64 bits."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{section}.{f.name}"
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, bool):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{name} = {v}: must be a finite number")
            if isinstance(v, int) and is_seed(f.name):
                if not 0 <= v <= SEED_MAX:
                    raise ConfigError(f"{name} = {v}: a seed must be an integer from 0 to 2**64 - 1")
            elif isinstance(v, int) and abs(v) > INT_MAX:
                raise ConfigError(f"{name} = {v}: too large (at most 2**63 - 1)")


def _at_least(name: str, value: float, low: float) -> None:
    if not value >= low:  # also refuses NaN
        raise ConfigError(f"{name} = {value}: must be at least {low}")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} = {value!r}: must be one of {', '.join(allowed)}")
