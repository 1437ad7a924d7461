"""The Roost wheel the hub serves to the devices it provisions, and the optional wheelhouse.

``ROOT/dist/roost-<version>-py3-none-any.whl`` is built once, on demand, from the source of the
running Roost (``pip wheel --no-deps`` of the project folder; an editable install has one), and
served at ``GET /v1/dist/<file>`` (no credentials: it is Roost's own public code; the playbook checks
its SHA-256). ``ROOT/wheelhouse/`` (``roost hub wheelhouse build``) holds that wheel and every
dependency, for devices that reach no package index: the playbook then installs with
``--no-index --find-links <hub>/v1/dist/wheelhouse/``.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import roost
from roost import __version__
from roost.provision.errors import DistNotFoundError, ProvisionError

logger = logging.getLogger(__name__)

DIST = "dist"
WHEELHOUSE = "wheelhouse"
BUILD_TIMEOUT = 600
_SAFE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,200}\.whl")
_lock = threading.Lock()


@dataclass(frozen=True)
class Wheel:
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


def source_dir() -> Path | None:
    """The project folder of the running Roost (an editable or source install), else None."""
    here = Path(roost.__file__).resolve().parent
    for candidate in (here.parent.parent, here.parent):
        project = candidate / "pyproject.toml"
        if project.is_file() and re.search(r'^name\s*=\s*"roost"', project.read_text(), re.M):
            return candidate
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_wheel(root: Path, *, rebuild: bool = False) -> Wheel:
    """The wheel of this Roost version (built when missing, or when ``rebuild``)."""
    dist = root / DIST
    with _lock:
        found = sorted(dist.glob(f"roost-{__version__}-*.whl")) if dist.is_dir() else []
        if found and not rebuild:
            return Wheel(found[-1], _sha256(found[-1]))
        src = source_dir()
        if src is None:
            raise ProvisionError(f"no wheel of Roost {__version__} in {dist} and no source to build one from: put "
                                 f"roost-{__version__}-py3-none-any.whl there", code="DIST_UNAVAILABLE")
        dist.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dist) as tmp:
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
                   "-w", tmp, str(src)]
            logger.info("building the Roost wheel from %s", src)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
            except subprocess.TimeoutExpired as err:
                raise ProvisionError(f"building the Roost wheel took over {BUILD_TIMEOUT} s",
                                     code="DIST_UNAVAILABLE") from err
            built = sorted(Path(tmp).glob("roost-*.whl"))
            if proc.returncode != 0 or not built:
                raise ProvisionError(f"building the Roost wheel from {src} failed: {proc.stderr.strip()[-1500:]}",
                                     code="DIST_UNAVAILABLE")
            for old in found:
                old.unlink(missing_ok=True)
            target = dist / built[0].name
            built[0].replace(target)
        return Wheel(target, _sha256(target))


def build_wheelhouse(root: Path, extra_args: list[str] | None = None) -> list[Path]:
    """``ROOT/wheelhouse``: the Roost wheel and wheels of all its dependencies (from this machine's index)."""
    wheel = ensure_wheel(root)
    house = root / WHEELHOUSE
    house.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "-w", str(house),
           str(wheel.path), *(extra_args or [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT * 3, check=False)
    if proc.returncode != 0:
        raise ProvisionError(f"building the wheelhouse failed: {proc.stderr.strip()[-1500:]}",
                             code="DIST_UNAVAILABLE")
    return sorted(house.glob("*.whl"))


def has_wheelhouse(root: Path) -> bool:
    house = root / WHEELHOUSE
    return house.is_dir() and any(house.glob(f"roost-{__version__}-*.whl"))


def dist_file(root: Path, name: str, *, wheelhouse: bool = False) -> Path:
    """The served file ``name`` (a plain wheel file name; nothing outside the folder)."""
    if not _SAFE_FILE.fullmatch(name) or ".." in name:
        raise DistNotFoundError(f"{name!r} is not a wheel file name")
    path = root / (WHEELHOUSE if wheelhouse else DIST) / name
    if not path.is_file():
        raise DistNotFoundError(f"the hub serves no {name}")
    return path


def wheelhouse_index(root: Path) -> str:
    """A find-links page: one link per wheel of the wheelhouse."""
    house = root / WHEELHOUSE
    names = sorted(p.name for p in house.glob("*.whl")) if house.is_dir() else []
    links = "\n".join(f'<a href="{html.escape(n)}">{html.escape(n)}</a><br>' for n in names)
    return f"<!DOCTYPE html><html><body>\n{links}\n</body></html>\n"
