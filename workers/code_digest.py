"""A digest of the code that makes outputs: the result cache keys it, so that any change to a
handler, an explainer, the runtime or the shapes they read (a fix, a new default) makes every
older entry miss, whatever version number the package carries."""

import functools
import hashlib
import importlib
from pathlib import Path

OUTPUT_PACKAGES = ("workers", "schemas")  # Sluice's code between an item and its output


def package_files(package: str) -> list[Path]:
    module = importlib.import_module(package)
    roots = [Path(p) for p in getattr(module, "__path__", [])] or [Path(str(module.__file__))]
    return sorted(f for root in roots for f in ([root] if root.is_file() else root.rglob("*.py")))


@functools.cache
def code_digest(*extra_packages: str) -> str:
    """SHA-256 over the source of Sluice's output-making packages and of `extra_packages` (a
    task from outside Sluice: its handler's top-level package), read once per process."""
    digest = hashlib.sha256()
    for package in (*OUTPUT_PACKAGES, *sorted(set(extra_packages) - set(OUTPUT_PACKAGES))):
        for path in package_files(package):
            digest.update(f"{package}/{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
