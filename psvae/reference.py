"""The reference implementation's ``ae_model.json`` keys, read as a fit config or a search.

Users of the reference (BehaveNet) describe a model with flat keys such as ``ps_vae.alpha``;
this adapter maps them onto our dotted keys so their files work unchanged. A list value is a
sweep over that key (a search turns it into a stage; a single fit refuses it).

    model_class            -> model.model_class
    n_ae_latents           -> model.n_unsupervised (all latents: the labels' K and, for
                              msps-vae, the n_background latents are subtracted; cond-ae-msp
                              subtracts K; cond-ae, vae and beta-tcvae use it as it is)
    ps_vae.alpha           -> loss.alpha
    ps_vae.beta            -> loss.beta (also vae.beta, beta_tcvae.beta)
    ps_vae.delta           -> loss.delta
    ps_vae.anneal_epochs   -> loss.anneal_epochs
    n_background           -> model.n_background
    n_sessions_per_batch   -> train.n_sessions_per_batch
    rng_seed_model         -> train.seed_model
    msp.alpha              -> loss.msp_alpha
    l2_reg                 -> train.weight_decay

Keys of the file that describe nothing this network has are accepted with the reference's
defaults only (``experiment_name`` with any value, ``model_type: conv``,
``fit_sess_io_layers: false``, ``ae_arch_json: null``, ``conditional_encoder: false``); any
other key is refused with its name and value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psvae.errors import ConfigError
from psvae.family import DEFAULT_CLASS, FAMILY, MODEL_CLASSES

KEYS: dict[str, str] = {
    "model_class": "model.model_class",
    "n_ae_latents": "model.n_unsupervised",
    "ps_vae.alpha": "loss.alpha",
    "ps_vae.beta": "loss.beta",
    "vae.beta": "loss.beta",
    "beta_tcvae.beta": "loss.beta",
    "ps_vae.delta": "loss.delta",
    "ps_vae.anneal_epochs": "loss.anneal_epochs",
    "n_background": "model.n_background",
    "n_sessions_per_batch": "train.n_sessions_per_batch",
    "rng_seed_model": "train.seed_model",
    "msp.alpha": "loss.msp_alpha",
    "l2_reg": "train.weight_decay",
}
"""Reference key -> our dotted fit-config key."""

# keys that carry no hyperparameter of this network: the values under which ignoring them is exact
INERT: dict[str, tuple[Any, ...] | None] = {
    "experiment_name": None,  # any value: a name only
    "model_type": ("conv",),
    "fit_sess_io_layers": (False,),
    "ae_arch_json": (None,),
    "conditional_encoder": (False,),
}
SECTIONS = ("data", "model", "loss", "train")  # the first part of our own dotted keys
N_BACKGROUND_DEFAULT = 3


def is_reference(mapping: Mapping[str, Any]) -> bool:
    """Whether ``mapping`` uses the reference's keys (any of them at the top level)."""
    return any(key in KEYS or key in INERT for key in mapping)


def _own_key(key: str) -> bool:
    return key in SECTIONS or key.partition(".")[0] in SECTIONS


def from_reference(
    mapping: Mapping[str, Any], source: str, n_labels: int | None = None
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Split a reference-style mapping into fixed fit-config keys and sweeps.

    Returns ``(fixed, sweeps)``: ``fixed`` maps our keys to single values (our own keys found
    in the mapping are passed through as they are), ``sweeps`` maps our dotted keys to the lists
    of values the file gives. ``n_labels`` (K of the data) is needed to turn ``n_ae_latents`` into
    a number of unsupervised latents. Raises ConfigError naming ``source``, the key and its value.
    """
    fixed: dict[str, Any] = {}
    sweeps: dict[str, list[Any]] = {}
    origin: dict[str, str] = {}
    for key, value in mapping.items():
        if key in INERT:
            allowed = INERT[key]
            if allowed is not None and value not in allowed:
                raise ConfigError(
                    f"{source}: {key} = {value!r}: not supported (only {allowed[0]!r} is; "
                    "this network has no such option)"
                )
            continue
        if key not in KEYS:
            if _own_key(key):
                fixed[key] = value
                continue
            raise ConfigError(
                f"{source}: {key} = {value!r}: not a supported ae_model.json key "
                f"(supported: {', '.join(KEYS)})"
            )
        target = KEYS[key]
        if target in origin:
            raise ConfigError(f"{source}: {key} and {origin[target]} both set {target}; give one")
        origin[target] = key
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"{source}: {key} = []: a sweep needs at least one value")
            sweeps[target] = list(value)
        else:
            fixed[target] = value
    if "model.n_unsupervised" in sweeps or "model.n_unsupervised" in fixed:
        _resolve_latents(fixed, sweeps, source, n_labels)
    return fixed, sweeps


def _resolve_latents(
    fixed: dict[str, Any], sweeps: dict[str, list[Any]], source: str, n_labels: int | None
) -> None:
    """Turn n_ae_latents (all latents) into model.n_unsupervised (U) for the model class."""
    model_class = fixed.get("model.model_class", DEFAULT_CLASS)
    if isinstance(model_class, list):
        raise ConfigError(f"{source}: model_class = {model_class!r}: give one model class")
    if model_class not in FAMILY:
        raise ConfigError(
            f"{source}: model.model_class = {model_class!r}: must be one of {', '.join(MODEL_CLASSES)}"
        )
    kind = FAMILY[model_class]
    taken = 0
    if kind.labels_in_latents:
        if n_labels is None:
            raise ConfigError(
                f"{source}: n_ae_latents: needs the data to count the labels; give the data files too"
            )
        taken = n_labels
    if kind.background:
        n_background = fixed.get("model.n_background", N_BACKGROUND_DEFAULT)
        if not isinstance(n_background, int):
            raise ConfigError(f"{source}: n_background = {n_background!r}: expected one integer")
        taken += n_background

    def convert(total: Any) -> int:
        if isinstance(total, bool) or not isinstance(total, int) or total - taken < 0:
            raise ConfigError(
                f"{source}: n_ae_latents = {total!r}: expected an integer of at least {taken} "
                f"({model_class} with {n_labels} labels keeps {taken} latents for labels and background)"
            )
        return total - taken

    if "model.n_unsupervised" in sweeps:
        sweeps["model.n_unsupervised"] = [convert(v) for v in sweeps["model.n_unsupervised"]]
    else:
        fixed["model.n_unsupervised"] = convert(fixed["model.n_unsupervised"])
