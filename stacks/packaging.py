"""Build the core package (`clinical_ner/`) as a deterministic zip at synth time.

Glue receives it through ``--extra-py-files`` (Glue adds a ``.zip`` of pure-Python packages to
``sys.path`` on the driver and executors). A plain zip is used rather than a wheel because
``--extra-py-files`` documents ``.py``/``.zip``, and a wheel would go through
``--additional-python-modules`` (a pip install at job start). The zip is byte-identical for
identical sources (sorted entries, fixed timestamps and permissions), so the CDK asset hash,
and therefore the deployed object, only changes when the code does.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "clinical_ner"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_EXCLUDED_DIRS = {"__pycache__"}
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")


def package_files(root: Path = REPO_ROOT) -> list[Path]:
    """Files of the core package that go into the zip, sorted, relative to `root`."""
    base = root / PACKAGE
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDED_DIRS)
        for name in sorted(filenames):
            if name.endswith(_EXCLUDED_SUFFIXES) or name.startswith("."):
                continue
            found.append((Path(dirpath) / name).relative_to(root))
    if Path(PACKAGE, "__init__.py") not in found:
        raise FileNotFoundError(f"{base} is not a Python package")
    return sorted(found, key=lambda p: p.as_posix())


def build_core_zip(
    root: Path = REPO_ROOT, out_dir: Path | None = None, *, layer: bool = False
) -> Path:
    """Write ``clinical_ner-<sha12>.zip`` (content-addressed) and return its path.

    With `layer`, entries go under ``python/`` (the Lambda layer layout) and the file is
    ``clinical_ner-layer-<sha12>.zip``.
    """
    files = package_files(root)
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.as_posix().encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    out_dir = out_dir or Path(tempfile.gettempdir()) / "clinical-ner-build"
    out_dir.mkdir(parents=True, exist_ok=True)
    kind, arc_prefix = ("-layer", "python/") if layer else ("", "")
    target = out_dir / f"{PACKAGE}{kind}-{digest.hexdigest()[:12]}.zip"
    if target.exists():
        return target
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in files:
            info = zipfile.ZipInfo(arc_prefix + rel.as_posix(), date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (root / rel).read_bytes())
    partial.replace(target)
    return target


def build_layer_zip(root: Path = REPO_ROOT, out_dir: Path | None = None) -> Path:
    """The core package as a Lambda layer (``python/clinical_ner/...``), deterministic bytes."""
    return build_core_zip(root, out_dir, layer=True)
