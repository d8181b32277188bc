"""The one YAML reader of the project.

PyYAML follows YAML 1.1, whose floats need a dot: ``1e-3`` is read as the *string* "1e-3",
so ``lr: 1e-3`` would be refused as "expected a number". :class:`Loader` is PyYAML's safe
loader with YAML 1.2's float rule added (``1e-3``, ``5E+2``, ``.5e1`` are numbers); everything
else is read as the safe loader reads it. Every place that reads YAML (config files, search
configs, ``--set`` values) goes through :func:`load` or :func:`read`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from psvae.errors import ConfigError
from psvae.paths import missing_reason


class Loader(yaml.SafeLoader):
    """The safe loader, reading exponent floats without a dot (YAML 1.2) as floats."""


# YAML 1.2 core schema floats that YAML 1.1 leaves as strings: digits with an exponent and no
# dot (1e-3, +2E5); the forms with a dot are already floats for the safe loader
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


def load(text: str) -> Any:
    """Parse YAML text (raises ``yaml.YAMLError`` when it is not YAML)."""
    return yaml.load(text, Loader=Loader)  # Loader is a SafeLoader: no Python objects


def read(path: str | Path, what: str = "config") -> Any:
    """Read and parse a YAML (or JSON) file; a missing, unreadable or malformed file is a
    one-line ConfigError naming the file (and the line of a syntax error)."""
    path = Path(path)
    reason = missing_reason(path)
    if reason == "no such file":
        raise ConfigError(f"{path}: no such {what} file")
    if reason is not None:
        raise ConfigError(f"{path}: {reason}; expected a YAML {what} file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected a YAML {what} file")
    try:
        text = path.read_text()
    except OSError as err:  # a symlink loop, no permission, ...
        raise ConfigError(f"{path}: cannot be read as a {what} file ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected a YAML {what}") from None
    try:
        return load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None


def parse_value(text: str) -> Any:
    """One ``--set KEY=VALUE`` value as YAML would read it (``1e-3`` a number, ``[4, 8]`` a list);
    text that is not YAML stays the string it is."""
    try:
        return load(text)
    except yaml.YAMLError:
        return text
