"""Where the reference apps live and how an engine is pointed at one.

Each refapp is a folder ``refapps/<slug>/`` with ``app.py`` (exposing
``app``), ``openapi.yaml``, ``markov.yaml`` and ``requirements.in``. The
validator never imports a refapp: it only hands ``app:app`` and the folder to
an engine process.
"""

from __future__ import annotations

import os
from pathlib import Path

from probatorium.errors import UsageError

#: Environment variable that points probatorium at another refapps folder.
REFAPPS_DIR_ENV = "PROBATORIUM_REFAPPS_DIR"


def refapps_root() -> Path:
    """The folder holding one sub-folder per refapp.

    ``$PROBATORIUM_REFAPPS_DIR`` when set, else ``<repo>/refapps`` (this file
    is ``<repo>/src/probatorium/targets/refapps.py``).
    """
    override = os.environ.get(REFAPPS_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return Path(__file__).resolve().parents[3] / "refapps"


REFAPP_FILES = ("app.py", "openapi.yaml", "markov.yaml")


def list_refapps() -> list[str]:
    """Slugs of the refapps the matrix discovers: folders with the whole refapp shape
    (``app.py``, ``openapi.yaml``, ``markov.yaml``; docs/contracts.md), sorted. Other apps kept
    under refapps/ (e.g. a bench app) can still be served with --refapp SLUG."""
    root = refapps_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if all((p / f).is_file() for f in REFAPP_FILES))


def refapp_dir(slug: str) -> Path:
    """The folder of refapp `slug`; UsageError naming the available ones if unknown."""
    root = refapps_root()
    available = sorted(p.name for p in root.iterdir() if (p / "app.py").is_file()) if root.is_dir() else []
    # Compare against the listing rather than joining blindly, so that a slug
    # like "../x" can never escape the refapps folder.
    if slug not in available:
        names = ", ".join(available) if available else f"none found under {refapps_root()}"
        raise UsageError(f"unknown refapp {slug!r}; available: {names}")
    return refapps_root() / slug


def refapp_app_target(slug: str) -> tuple[str, Path]:
    """``("app:app", folder)``: what an engine must serve, and from where."""
    return "app:app", refapp_dir(slug)


def refapp_services(slug: str) -> list[str]:
    """Backing services a refapp needs, from its services.txt (one name a line, # comments)."""
    path = refapp_dir(slug) / "services.txt"
    if not path.is_file():
        return []
    names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [n for n in names if n]


#: The file in which a refapp declares whether it keeps acknowledged writes across its own
#: SIGKILL and restart (Tier 3's ``--durable``; docs/tier3.md "Durability model").
DURABILITY_FILE = "durability.txt"
DURABILITY_WORDS = {"durable": True, "volatile": False}


def refapp_durable(slug: str) -> bool:
    """Whether refapp ``slug`` declares itself durable in its durability.txt: one word,
    ``durable`` (its state lives in a durable backend) or ``volatile`` (in-memory state, or a
    cache), ``#`` comments allowed. No file: volatile. Anything else is one UsageError line."""
    path = refapp_dir(slug) / DURABILITY_FILE
    if not path.is_file():
        return False
    words = [w for line in path.read_text().splitlines() for w in line.split("#", 1)[0].split()]
    if len(words) != 1 or words[0] not in DURABILITY_WORDS:
        raise UsageError(f"{path}: expected one word, 'durable' or 'volatile' (got {' '.join(words) or 'nothing'!r})")
    return DURABILITY_WORDS[words[0]]
