"""The search spec: data, the base fit config, and the stages, read from YAML.

    data: [session1.h5]            # paths relative to this file
    fit: {train: {epochs: 50}}     # applied to every trial (nested or dotted keys)
    alpha: null                    # a number fixes alpha by hand and skips the alpha stage
    beta: null                     # likewise for beta
    resources: {cpus_per_trial: 1, gpus_per_trial: 0, max_concurrent: 0, share_idle_cpus: true}
    max_failures: 2                # retries of a trial whose worker dies
    checkpoint_every_s: 60         # least time between two checkpoints of a trial (0: every epoch)
    stages:                        # default: the guide's alpha -> beta -> seeds
      - {name: alpha, values: [50, 100, 500, 1000], n_unsupervised: [2]}
      - {name: beta, values: [1, 5, 10, 20]}
      - {name: seeds, values: [0, 1, 2]}

Stages are data: each names the config key it varies and the selection rule that picks
from its results. Everything is checked here, before Ray starts or any trial runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psvae import yaml_io
from psvae.config import SEED_MAX, FitConfig
from psvae.errors import ConfigError, DataError
from psvae.family import DEFAULT_CLASS, FAMILY, SELECTIVE_KEYS, classes_reading

# stage name -> (the fit-config key it varies, the default values, the default rule)
STAGE_KINDS: dict[str, tuple[str, tuple[float | str, ...], str]] = {
    "alpha": ("loss.alpha", (50.0, 100.0, 500.0, 1000.0), "alpha_label_band"),
    "beta": ("loss.beta", (1.0, 5.0, 10.0, 20.0), "lowest_correlation"),
    # msps-vae: beta crossed with delta, the weight of the background triplet loss
    "beta_delta": ("loss.beta", (1.0, 5.0, 10.0, 20.0), "session_correlation"),
    "msp_alpha": ("loss.msp_alpha", (0.1, 1.0, 10.0, 100.0), "msp_tolerance"),
    "seeds": ("train.seed_model", (0, 1, 2), "lowest_correlation"),
    # optional, ahead of alpha: fixed sigma_x values against the calibrated one (docs/latents.md)
    "sigma_x": ("loss.sigma_x", ("auto", 0.1, 0.3, 1.0), "sigma_leakage"),
}
# a stage kind that crosses its values with a second key: name -> (key, default values, YAML name)
CROSSED: dict[str, tuple[str, tuple[float, ...], str]] = {
    "beta_delta": ("loss.delta", (50.0, 100.0, 500.0, 1000.0), "delta"),
}
ALGORITHMS = ("grid", "optuna")
TOP_KEYS = {
    "data",
    "fit",
    "alpha",
    "beta",
    "resources",
    "max_failures",
    "checkpoint_every_s",
    "stages",
    "reuse_fits",
    "dashboard",
}
# what only changes how the search runs, not what it finds: left out of the spec hash
RUNTIME_KEYS = ("resources", "max_failures", "checkpoint_every_s", "reuse_fits", "dashboard")
STAGE_KEYS = {
    "name",
    "key",
    "algorithm",
    "values",
    "range",
    "n_trials",
    "n_unsupervised",
    "rule",
    "rule_params",
    "delta",
}
RESOURCE_KEYS = {"cpus_per_trial", "gpus_per_trial", "max_concurrent", "share_idle_cpus"}


@dataclass(frozen=True)
class StageSpec:
    name: str  # alpha, beta, seeds, or any name with a key of its own
    key: str  # the dotted fit-config key the stage varies
    values: tuple[Any, ...]  # the values it takes
    rule: str
    rule_params: dict[str, Any] = field(default_factory=dict)
    algorithm: str = "grid"  # or "optuna": n_trials samples of a log-uniform range
    n_unsupervised: tuple[int, ...] = ()  # alpha stage only: also sweep U
    range: tuple[float, float] | None = None  # optuna only
    n_trials: int = 0  # optuna only
    # a second key crossed with ``values`` (the beta_delta stage: ("loss.delta", (50.0, ...)))
    cross: tuple[str, tuple[Any, ...]] | None = None

    def varied_keys(self) -> tuple[str, ...]:
        """The keys this stage's decision fixes for the stages after it."""
        keys = (self.key, "model.n_unsupervised") if self.n_unsupervised else (self.key,)
        return (*keys, self.cross[0]) if self.cross else keys

    def trial_overrides(self) -> list[dict[str, Any]]:
        """One dict of dotted fit-config keys per trial of this stage."""
        out = []
        for value in self.values:
            for u in self.n_unsupervised or (None,):
                for crossed in self.cross[1] if self.cross else (None,):
                    trial: dict[str, Any] = {self.key: value}
                    if u is not None:
                        trial["model.n_unsupervised"] = int(u)
                    if self.cross is not None:
                        trial[self.cross[0]] = crossed
                    out.append(trial)
        return out


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0: as many as the resources allow
    # a stage's last trials take the CPUs its ended ones left, as threads, from when they do
    # (search/threads.py); false: every fit keeps its own thread count, start to end, so a fit's
    # numbers do not depend on when its fellows ended (threads change their last digits)
    share_idle_cpus: bool = True


@dataclass(frozen=True)
class SearchSpec:
    data: tuple[str, ...]  # absolute paths
    fit: dict[str, Any]  # flat dotted keys of the base fit config
    stages: tuple[StageSpec, ...]
    alpha: float | None = None
    beta: float | None = None
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 2
    checkpoint_every_s: float = 60.0  # least time between two checkpoints of a trial; 0: every epoch
    reuse_fits: bool = True  # a trial whose fit an earlier stage completed is not run again
    dashboard: bool = True  # a local search starts Ray's dashboard (on 127.0.0.1)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def spec_hash(self) -> str:
        """Hash of everything that changes results (not resources, which only change speed)."""
        d = self.to_dict()
        for key in RUNTIME_KEYS:
            d.pop(key, None)
        for stage in d["stages"]:  # a stage without a crossed key hashes as before it existed
            if stage.get("cross") is None:
                stage.pop("cross", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpec:
        stages = tuple(
            StageSpec(
                name=s["name"],
                key=s["key"],
                values=tuple(s["values"]),
                rule=s["rule"],
                rule_params=dict(s.get("rule_params", {})),
                algorithm=s.get("algorithm", "grid"),
                n_unsupervised=tuple(s.get("n_unsupervised", ())),
                range=None if s.get("range") is None else (float(s["range"][0]), float(s["range"][1])),
                n_trials=int(s.get("n_trials", 0)),
                cross=None if s.get("cross") is None else (s["cross"][0], tuple(s["cross"][1])),
            )
            for s in d["stages"]
        )
        return cls(
            data=tuple(d["data"]),
            fit=dict(d["fit"]),
            stages=stages,
            alpha=d.get("alpha"),
            beta=d.get("beta"),
            resources=Resources(**d.get("resources", {})),
            max_failures=int(d.get("max_failures", 2)),
            checkpoint_every_s=float(d.get("checkpoint_every_s", 60.0)),
            reuse_fits=bool(d.get("reuse_fits", True)),
            dashboard=bool(d.get("dashboard", True)),
        )

    def relative_to(self, folder: Path) -> SearchSpec:
        """The spec with data files inside ``folder`` (a run's own inputs) named relative to it,
        as the run's manifest records them: a run moved with its inputs still finds them."""
        out = []
        for path in self.data:
            p = Path(path)
            out.append(
                p.relative_to(folder).as_posix() if p.is_absolute() and p.is_relative_to(folder) else path
            )
        return dataclasses.replace(self, data=tuple(out))

    def resolved(self, folder: Path) -> SearchSpec:
        """The inverse of :meth:`relative_to`: relative data files are inside ``folder``."""
        return dataclasses.replace(
            self, data=tuple(path if Path(path).is_absolute() else str(folder / path) for path in self.data)
        )

    def base_config(self) -> FitConfig:
        return FitConfig.from_mapping(self.fit, source="fit")


def default_stages(model_class: str = DEFAULT_CLASS) -> list[dict[str, Any]]:
    """The default plan of ``model_class``: its stages with their default values and rules."""
    return [{"name": name} for name in FAMILY[model_class].default_plan]


def _number(source: str, key: str, value: Any, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{source}: {key} = {value!r}: expected a number")
    if value < low:
        raise ConfigError(f"{source}: {key} = {value!r}: must be at least {low:g}")
    return float(value)


def _sigma_value(source: str, where: str, value: Any) -> None:
    """A sigma_x stage value: a number > 0 or the name of a calibration (auto, auto-epoch)."""
    from psvae.config import SIGMA_X_MODES

    if isinstance(value, str):
        if value not in SIGMA_X_MODES:
            raise ConfigError(
                f"{source}: {where} = {value!r}: expected a number > 0 or one of {', '.join(SIGMA_X_MODES)}"
            )
        return
    if _number(source, f"{where} (loss.sigma_x)", value) <= 0:
        raise ConfigError(f"{source}: {where} = {value!r}: sigma_x must be greater than 0")


def _check_rule_params(source: str, where: str, rule: str, params: Mapping[str, Any]) -> None:
    """A rule's parameters are checked here rather than when its stage ends, hours later: each
    must be one the rule takes, a finite number >= 0, and within what the rule accepts (an
    activity threshold must be > 0: ``search.selection.check_params``)."""
    from search.selection import PARAM_CHECKS, rule_params

    accepted = rule_params(rule)
    for name, value in params.items():
        if name not in accepted:
            raise ConfigError(
                f"{source}: {where}.rule_params.{name}: not a parameter of rule {rule} "
                f"(it takes: {', '.join(accepted) or 'no parameters'})"
            )
        if name not in PARAM_CHECKS:
            _number(source, f"{where}.rule_params.{name}", value)
            continue
        try:
            PARAM_CHECKS[name](value)
        except ValueError as err:
            raise ConfigError(f"{source}: {where}.rule_params.{err}") from None


def _parse_stage(
    source: str, i: int, raw: Any, fixed: dict[str, float | None], model_class: str = DEFAULT_CLASS
) -> StageSpec | None:
    where = f"stages[{i}]"
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {where} = {raw!r}: expected a mapping with a name")
    unknown = sorted(set(raw) - STAGE_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: {where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(STAGE_KEYS))})"
        )
    name = raw.get("name")
    if not isinstance(name, str) or (name not in STAGE_KINDS and "key" not in raw):
        raise ConfigError(
            f"{source}: {where}.name = {name!r}: unknown stage (known: {', '.join(STAGE_KINDS)}; "
            "any other name needs a key: the fit-config key it varies)"
        )
    from search.results import STAGE_NAME

    if not STAGE_NAME.fullmatch(name):  # it names the stage's folders
        raise ConfigError(
            f"{source}: {where}.name = {name!r}: use letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    if fixed.get(name) is not None:
        return None  # fixed by hand: the stage is skipped
    key, default_values, default_rule = STAGE_KINDS.get(name, (raw.get("key"), (), "lowest_correlation"))
    if name == "seeds":  # the msps-vae also wants near-chance session accuracy among its seeds
        default_rule = FAMILY[model_class].seeds_rule
    if "key" in raw and name in STAGE_KINDS and raw["key"] != key:
        raise ConfigError(f"{source}: {where}.key = {raw['key']!r}: the {name} stage always varies {key}")
    if key not in FitConfig.keys():  # noqa: SIM118 - a list of dotted keys, not a dict
        raise ConfigError(f"{source}: {where}.key = {key!r}: not a fit-config key")
    cross_kind = CROSSED.get(name)
    for varied in (key, cross_kind[0] if cross_kind else None):
        if varied in SELECTIVE_KEYS and varied not in FAMILY[model_class].reads:
            raise ConfigError(
                f"{source}: {where}: stage {name} varies {varied}, which model.model_class = "
                f"{model_class!r} does not use (it is for {', '.join(classes_reading(varied))})"
            )
    if "delta" in raw and cross_kind is None:
        raise ConfigError(f"{source}: {where}.delta: only the beta_delta stage crosses delta values")
    algorithm = raw.get("algorithm", "grid")
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"{source}: {where}.algorithm = {algorithm!r}: must be one of {', '.join(ALGORITHMS)}"
        )
    search_range: tuple[float, float] | None = None
    n_trials = 0
    if algorithm == "optuna":
        if name == "seeds" or "values" in raw or cross_kind is not None:
            raise ConfigError(
                f"{source}: {where}: an optuna stage samples a range (range: [low, high], n_trials: N); "
                "it takes no values and cannot vary seeds or cross two keys"
            )
        bounds = raw.get("range")
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            raise ConfigError(f"{source}: {where}.range = {bounds!r}: expected [low, high]")
        low = _number(source, f"{where}.range[0]", bounds[0], low=1e-300)
        high = _number(source, f"{where}.range[1]", bounds[1], low=1e-300)
        if not high > low:
            raise ConfigError(f"{source}: {where}.range = {list(bounds)}: high must be above low (log scale)")
        search_range = (low, high)
        n_trials = raw.get("n_trials", 8)
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise ConfigError(f"{source}: {where}.n_trials = {n_trials!r}: expected an integer >= 1")
        default_values = (low,)  # not used for sampling; keeps the checks below uniform
    elif "range" in raw or "n_trials" in raw:
        raise ConfigError(f"{source}: {where}: range and n_trials need algorithm: optuna")
    values = raw.get("values", list(default_values))
    if not isinstance(values, list | tuple) or not values:
        raise ConfigError(
            f"{source}: {where}.values = {values!r}: expected a non-empty list of {name} values"
        )
    for j, v in enumerate(values):
        if name == "seeds":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= SEED_MAX:
                raise ConfigError(
                    f"{source}: {where}.values[{j}] = {v!r}: seeds are integers from 0 to 2**64 - 1"
                )
        elif name == "sigma_x":
            _sigma_value(source, f"{where}.values[{j}]", v)
        elif name in STAGE_KINDS:
            _number(source, f"{where}.values[{j}] ({key})", v)
    values = (
        [float(v) for v in values] if name in ("alpha", "beta", "beta_delta", "msp_alpha") else list(values)
    )
    if name == "sigma_x":
        values = [v if isinstance(v, str) else float(v) for v in values]
    if len(set(values)) != len(values):
        raise ConfigError(f"{source}: {where}.values = {list(values)}: values repeat")
    n_u = raw.get("n_unsupervised", ())
    if n_u and name != "alpha":
        raise ConfigError(f"{source}: {where}.n_unsupervised: only the alpha stage sweeps n_unsupervised")
    if not isinstance(n_u, list | tuple) or any(
        isinstance(u, bool) or not isinstance(u, int) or u < 0 for u in n_u
    ):
        raise ConfigError(f"{source}: {where}.n_unsupervised = {n_u!r}: expected a list of integers >= 0")
    from search.selection import RULES

    rule = raw.get("rule", default_rule)
    if rule not in RULES:
        raise ConfigError(
            f"{source}: {where}.rule = {rule!r}: unknown rule (known: {', '.join(sorted(RULES))})"
        )
    params = raw.get("rule_params", {})
    if not isinstance(params, Mapping):
        raise ConfigError(f"{source}: {where}.rule_params = {params!r}: expected a mapping")
    _check_rule_params(source, where, rule, params)
    cross: tuple[str, tuple[Any, ...]] | None = None
    if cross_kind is not None:
        cross_key, cross_default, cross_name = cross_kind
        crossed = raw.get(cross_name, list(cross_default))
        if not isinstance(crossed, list | tuple) or not crossed:
            raise ConfigError(
                f"{source}: {where}.{cross_name} = {crossed!r}: expected a non-empty list of numbers"
            )
        for j, v in enumerate(crossed):
            _number(source, f"{where}.{cross_name}[{j}] ({cross_key})", v)
        if len(set(crossed)) != len(crossed):
            raise ConfigError(f"{source}: {where}.{cross_name} = {list(crossed)}: values repeat")
        cross = (cross_key, tuple(float(v) for v in crossed))
    if algorithm == "optuna":
        values = []
    return StageSpec(
        name, key, tuple(values), rule, dict(params), algorithm, tuple(n_u), search_range, n_trials, cross
    )


def _stage_keys(name: str) -> set[str]:
    """The keys a stage kind varies."""
    crossed = CROSSED.get(name)
    return {STAGE_KINDS[name][0], *((crossed[0],) if crossed else ())}


def stages_from_sweeps(sweeps: dict[str, list[Any]], base: FitConfig) -> list[dict[str, Any]]:
    """The stages of a reference config's list values, in the guide's order: alpha (with
    n_unsupervised), beta (beta x delta for msps-vae), msp_alpha, any other key, seeds."""
    sweeps = dict(sweeps)
    stages: list[dict[str, Any]] = []
    if "loss.alpha" in sweeps:
        stage: dict[str, Any] = {"name": "alpha", "values": sweeps.pop("loss.alpha")}
        if "model.n_unsupervised" in sweeps:
            stage["n_unsupervised"] = sweeps.pop("model.n_unsupervised")
        stages.append(stage)
    if FAMILY[base.model.model_class].background and ("loss.beta" in sweeps or "loss.delta" in sweeps):
        stages.append(
            {
                "name": "beta_delta",
                "values": sweeps.pop("loss.beta", [base.loss.beta]),
                "delta": sweeps.pop("loss.delta", [base.loss.delta]),
            }
        )
    for key, name in (("loss.beta", "beta"), ("loss.msp_alpha", "msp_alpha")):
        if key in sweeps:
            stages.append({"name": name, "values": sweeps.pop(key)})
    seeds = sweeps.pop("train.seed_model", None)
    for key, values in sweeps.items():
        stages.append({"name": key.partition(".")[2], "key": key, "values": values})
    if seeds is not None:
        stages.append({"name": "seeds", "values": seeds})
    return stages


def parse_spec(
    raw: Mapping[str, Any], source: str, base_dir: Path, notes: list[str] | None = None
) -> SearchSpec:
    """Check a search config (already loaded from YAML) and resolve its paths.

    The fit config (``fit``, or keys at the top level) may use the reference's ``ae_model.json``
    keys (see :mod:`psvae.reference`); their list values become the stages. ``notes``, when
    given, receives one line per adjustment of the fit config (see ``FitConfig.from_layers``).
    """
    from psvae import reference

    raw = dict(raw)
    ref_top = {k: raw.pop(k) for k in list(raw) if k in reference.KEYS or k in reference.INERT}
    if ref_top:  # a reference-style file: its other unknown keys are reported as reference keys
        ref_top.update({k: raw.pop(k) for k in list(raw) if k not in TOP_KEYS})
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(TOP_KEYS))})")
    data = raw.get("data")
    if data is None:
        raise ConfigError(f"{source}: no data: list the session files under data:, or give --data FILE ...")
    if isinstance(data, str):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(p, str) for p in data):
        raise ConfigError(f"{source}: data = {data!r}: expected a list of HDF5 files")
    from psvae import paths as input_paths

    paths = tuple(str(input_paths.resolve(base_dir / p, DataError)) for p in data)
    from psvae.datafiles import frame_shape_of

    for p in paths:  # a missing or malformed file fails here, before Ray starts
        frame_shape_of(p)

    fit_raw = raw.get("fit") or {}
    if not isinstance(fit_raw, Mapping):
        raise ConfigError(f"{source}: fit = {fit_raw!r}: expected a mapping of fit-config keys")
    sweeps: dict[str, list[Any]] = {}
    ref_fixed: set[str] = set()  # keys a reference config gives one value: no stage varies them
    if ref_top or reference.is_reference(fit_raw):
        from psvae.data import label_count

        merged = {**fit_raw, **ref_top}
        n_labels = label_count(paths[0]) if "n_ae_latents" in merged else None
        fit_raw, sweeps = reference.from_reference(merged, source, n_labels)
        ref_fixed = {reference.KEYS[k] for k in merged if k in reference.KEYS} - set(sweeps)
    base, fit_notes = FitConfig.from_layers([(f"{source}: fit", fit_raw)])
    if notes is not None:
        notes.extend(fit_notes)

    fixed: dict[str, float | None] = {}
    for name in ("alpha", "beta"):
        value = raw.get(name)
        fixed[name] = None if value is None else _number(source, name, value)

    model_class = base.model.model_class
    if sweeps and "stages" in raw:
        raise ConfigError(
            f"{source}: stages: give the sweeps either as lists of ae_model.json keys or as stages, not both"
        )
    if sweeps:
        stages_raw: Any = stages_from_sweeps(sweeps, base)
    elif "stages" in raw:
        stages_raw = raw["stages"]
    else:
        stages_raw = [s for s in default_stages(model_class) if not _stage_keys(s["name"]) <= ref_fixed]
        if not stages_raw:
            raise ConfigError(
                f"{source}: every key of the reference config has one value: nothing to search "
                "(give a list of values to sweep a key)"
            )
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{source}: stages = {stages_raw!r}: expected a non-empty list of stages")
    parsed = [
        _parse_stage(source, i, raw_stage, fixed, model_class) for i, raw_stage in enumerate(stages_raw)
    ]
    stages = [s for s in parsed if s is not None]
    if not stages:
        raise ConfigError(f"{source}: every stage is fixed by hand (alpha, beta): nothing to search")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: stages: {names}: a stage appears twice")

    res_raw = raw.get("resources") or {}
    if not isinstance(res_raw, Mapping) or set(res_raw) - RESOURCE_KEYS:
        bad = sorted(set(res_raw) - RESOURCE_KEYS) if isinstance(res_raw, Mapping) else res_raw
        raise ConfigError(
            f"{source}: resources: unknown key {bad!r} (known: {', '.join(sorted(RESOURCE_KEYS))})"
        )
    cpus = _number(source, "resources.cpus_per_trial", res_raw.get("cpus_per_trial", 1), low=0.01)
    gpus = _number(source, "resources.gpus_per_trial", res_raw.get("gpus_per_trial", 0))
    if 0 < gpus < 1 and not math.isclose(1 / gpus, round(1 / gpus)):
        raise ConfigError(
            f"{source}: resources.gpus_per_trial = {gpus:g}: a fraction must divide 1 (0.5, 0.25, ...)"
        )
    max_conc = res_raw.get("max_concurrent", 0)
    if isinstance(max_conc, bool) or not isinstance(max_conc, int) or max_conc < 0:
        raise ConfigError(f"{source}: resources.max_concurrent = {max_conc!r}: expected an integer >= 0")
    share_idle = res_raw.get("share_idle_cpus", True)
    if not isinstance(share_idle, bool):
        raise ConfigError(f"{source}: resources.share_idle_cpus = {share_idle!r}: expected true or false")
    max_failures = raw.get("max_failures", 2)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise ConfigError(f"{source}: max_failures = {max_failures!r}: expected an integer >= 0")

    every_s = _number(source, "checkpoint_every_s", raw.get("checkpoint_every_s", 60.0))
    reuse_fits, dashboard = raw.get("reuse_fits", True), raw.get("dashboard", True)
    for key, value in (("reuse_fits", reuse_fits), ("dashboard", dashboard)):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} = {value!r}: expected true or false")
    spec = SearchSpec(
        data=paths,
        fit=base.flat(),
        stages=tuple(stages),
        alpha=fixed["alpha"],
        beta=fixed["beta"],
        resources=Resources(cpus, gpus, max_conc, share_idle),
        max_failures=max_failures,
        checkpoint_every_s=every_s,
        reuse_fits=reuse_fits,
        dashboard=dashboard,
    )
    # every trial's config must be valid too (e.g. anneal_epochs vs epochs, n_unsupervised)
    for stage in spec.stages:
        for overrides in stage.trial_overrides():
            base.replace(**overrides)
        for end in stage.range or ():
            base.replace(**{stage.key: end})
    return spec


def load_spec(
    path: str | Path,
    alpha: float | None = None,
    beta: float | None = None,
    data: Sequence[str] | None = None,
    notes: list[str] | None = None,
) -> SearchSpec:
    """Read a search config. ``data`` (paths relative to the current directory) supplies or
    replaces its ``data:``, so one config serves many datasets (``--data``)."""
    path = Path(path)
    raw = yaml_io.read(path, "search config") or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of search-config keys")
    raw = dict(raw)
    if alpha is not None:
        raw["alpha"] = alpha
    if beta is not None:
        raw["beta"] = beta
    if data:
        raw["data"] = [os.path.abspath(p) for p in data]  # checked and resolved by parse_spec
    return parse_spec(raw, str(path), path.parent, notes)
