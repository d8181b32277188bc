"""The model family as one table: what each ``model.model_class`` has and needs.

Every module that behaves differently per class asks this table (``FAMILY[name].variational``,
``.label_head``, ...) instead of comparing class names, so a class is described in one place.
See ``docs/model.md`` §7 for the objectives themselves.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelClass:
    name: str
    title: str  # what the class is, in a few words
    variational: bool  # latents are sampled (z = mu + eps * sigma) and pay a KL
    supervised: bool  # the latent layout has a supervised block of K latents
    label_head: bool  # labels come from a diagonal affine head on the supervised means
    conditional: bool  # the decoder reads [z, labels], and encoding needs the frames' labels
    projection: bool  # labels are P z with a bias-free projection P (matrix subspace projection)
    background: bool  # background latents, per-session label statistics and multi-session batches
    min_unsupervised: int  # the least model.n_unsupervised the class can work with
    # the objective has the beta-TCVAE terms (mi, tc, dwkl) of the unsupervised latents
    tc_decomposition: bool
    reads: frozenset[str]  # the loss / model / train keys only some classes read (the others ignore them)
    labels_in_latents: bool  # the reference's n_ae_latents counts the labels' latents too
    default_plan: tuple[str, ...]  # the search stages of the class, in order
    seeds_rule: str  # the rule that picks among the seeds (and the class's beta-like stage)


FAMILY: dict[str, ModelClass] = {
    "ps-vae": ModelClass(
        name="ps-vae",
        title="Partitioned Subspace VAE",
        variational=True,
        supervised=True,
        label_head=True,
        conditional=False,
        projection=False,
        background=False,
        min_unsupervised=0,
        tc_decomposition=True,
        reads=frozenset({"loss.alpha", "loss.beta"}),
        labels_in_latents=True,
        default_plan=("alpha", "beta", "seeds"),
        seeds_rule="lowest_correlation",
    ),
    "msps-vae": ModelClass(
        name="msps-vae",
        title="multi-session PS-VAE",
        variational=True,
        supervised=True,
        label_head=True,
        conditional=False,
        projection=False,
        background=True,
        min_unsupervised=0,
        tc_decomposition=True,
        reads=frozenset(
            {"loss.alpha", "loss.beta", "loss.delta", "model.n_background", "train.n_sessions_per_batch"}
        ),
        labels_in_latents=True,
        default_plan=("alpha", "beta_delta", "seeds"),
        seeds_rule="session_correlation",
    ),
    "cond-ae": ModelClass(
        name="cond-ae",
        title="conditional autoencoder",
        variational=False,
        supervised=True,
        label_head=False,
        conditional=True,
        projection=False,
        background=False,
        min_unsupervised=1,
        tc_decomposition=False,
        reads=frozenset(),
        labels_in_latents=False,
        default_plan=("seeds",),
        seeds_rule="lowest_correlation",
    ),
    "cond-ae-msp": ModelClass(
        name="cond-ae-msp",
        title="autoencoder with matrix subspace projection",
        variational=False,
        supervised=True,
        label_head=False,
        conditional=False,
        projection=True,
        background=False,
        min_unsupervised=0,
        tc_decomposition=False,
        reads=frozenset({"loss.msp_alpha"}),
        labels_in_latents=True,
        default_plan=("msp_alpha", "seeds"),
        seeds_rule="lowest_correlation",
    ),
    "vae": ModelClass(
        name="vae",
        title="beta-VAE",
        variational=True,
        supervised=False,
        label_head=False,
        conditional=False,
        projection=False,
        background=False,
        min_unsupervised=1,
        tc_decomposition=False,
        reads=frozenset({"loss.beta"}),
        labels_in_latents=False,
        default_plan=("beta", "seeds"),
        seeds_rule="lowest_correlation",
    ),
    "beta-tcvae": ModelClass(
        name="beta-tcvae",
        title="beta-TCVAE",
        variational=True,
        supervised=False,
        label_head=False,
        conditional=False,
        projection=False,
        background=False,
        min_unsupervised=1,
        tc_decomposition=True,
        reads=frozenset({"loss.beta"}),
        labels_in_latents=False,
        default_plan=("beta", "seeds"),
        seeds_rule="lowest_correlation",
    ),
}
MODEL_CLASSES: tuple[str, ...] = tuple(FAMILY)
DEFAULT_CLASS = "ps-vae"


def model_class(name: str) -> ModelClass:
    """The row of ``name``; a KeyError for a name that is not a class (configs check it first)."""
    return FAMILY[name]


def classes_reading(key: str) -> tuple[str, ...]:
    """The classes that read ``key``, or () when every class reads it (or none declares it)."""
    readers = tuple(c.name for c in FAMILY.values() if key in c.reads)
    return readers


SELECTIVE_KEYS: frozenset[str] = frozenset().union(*(c.reads for c in FAMILY.values()))
"""The keys only some classes read: a search stage varying one for another class compares nothing."""
