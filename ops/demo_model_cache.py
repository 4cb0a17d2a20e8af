"""The demo models' cache: `build_all` builds the named demo models once into `root/<name>/`
(what `sluice models build` and the tests' `demo_models` fixture use) and rebuilds one only
when the code that makes it changed."""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import ops.demo_entity_models
import ops.demo_generation_models
import ops.demo_models
import ops.demo_speech_models
import ops.demo_vision_models
import workers.extractive_qa
import workers.training.records_mlp
import workers.training.scratch_entities
import workers.training.scratch_generators
import workers.training.scratch_models
import workers.training.scratch_qa
import workers.training.scratch_text
import workers.training.synth_audio
import workers.training.synth_shapes
import workers.training.synth_tones
import workers.vision_towers
from ops.demo_entity_models import build_entity_tagger, build_qa_reader
from ops.demo_generation_models import build_spell_causal, build_spell_seq2seq
from ops.demo_models import (
    Metrics,
    build_audio_classifier,
    build_image_classifier,
    build_records_classifier,
    build_records_regressor,
)
from ops.demo_speech_models import build_speech_recognizer, build_tone_digits_recognizer
from ops.demo_vision_models import build_shapes_detector, build_tiny_clip

Builder = Callable[[Path], Metrics]


BUILDERS: dict[str, Builder] = {
    "digits-classifier": build_image_classifier,
    "sounds-classifier": build_audio_classifier,
    "breast-cancer-classifier": build_records_classifier,
    "diabetes-regressor": build_records_regressor,
    "tiny-ctc": functools.partial(build_speech_recognizer, kind="ctc"),
    "tiny-whisper": functools.partial(build_speech_recognizer, kind="whisper"),
    "tone-digits-ctc": build_tone_digits_recognizer,
    "tiny-spell-seq2seq": build_spell_seq2seq,
    "tiny-spell-causal": build_spell_causal,
    "tiny-entities": build_entity_tagger,
    "tiny-qa": build_qa_reader,
    "tiny-clip": build_tiny_clip,
    "shapes-detector": build_shapes_detector,
}

METRICS_FILE = "metrics.json"
# The models are tiny: one torch thread trains each as fast as two (measured: tiny-entities
# 46.9 s on one thread, 47.8 s on two), so models are built side by side, one process per
# core, the longest first, the cores shared among them. At most this many at once (each
# holds torch and its data).
MOST_BUILDS_AT_ONCE = 4
LONGEST_FIRST = ("shapes-detector", "tiny-entities", "tiny-qa", "tiny-clip", "tone-digits-ctc")
RECIPE_MODULES = (
    ops.demo_entity_models,
    ops.demo_generation_models,
    ops.demo_models,
    ops.demo_speech_models,
    ops.demo_vision_models,
    workers.extractive_qa,
    workers.training.records_mlp,
    workers.training.scratch_entities,
    workers.training.scratch_generators,
    workers.training.scratch_models,
    workers.training.scratch_qa,
    workers.training.scratch_text,
    workers.training.synth_audio,
    workers.training.synth_shapes,
    workers.training.synth_tones,
    workers.vision_towers,
)


def recipe_version() -> str:
    """A digest of the code that makes the models: a cached model made by an older recipe
    is rebuilt rather than silently reused."""
    digest = hashlib.sha256()
    for module in RECIPE_MODULES:
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:12]


def is_built(model_dir: Path) -> bool:
    """metrics.json is written last, so its presence means a complete model directory; its
    recipe must be today's."""
    try:
        metrics = json.loads((model_dir / METRICS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(metrics.get("recipe") == recipe_version())


def _build_one(root: Path, name: str) -> Metrics:
    target = root / name
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        metrics = {**BUILDERS[name](scratch), "recipe": recipe_version()}
        (scratch / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        if target.exists():  # forced rebuild or a leftover without metrics.json
            shutil.rmtree(target)
        scratch.rename(target)  # atomic on one filesystem: never a half-written model
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return metrics


def _exit_on_sigterm() -> None:
    """In a build process: SIGTERM (a broken pool stops its other processes so) exits
    through Python, so _build_one's cleanup removes the model's scratch directory."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def _cores() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _build_in_child(root: str, name: str, threads: int) -> Metrics:
    import torch

    torch.set_num_threads(threads)
    return _build_one(Path(root), name)


def _build_side_by_side(
    root: Path, names: list[str], on_built: Callable[[str, Metrics], None] | None
) -> dict[str, Metrics]:
    """`names` built in processes of their own (spawned: torch is never forked), one per
    core; each model's metrics as it is done."""
    cores = _cores()
    workers = min(len(names), cores, MOST_BUILDS_AT_ONCE)
    threads = max(1, cores // workers)
    order = sorted(names, key=lambda n: LONGEST_FIRST.index(n) if n in LONGEST_FIRST else 99)
    done: dict[str, Metrics] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_exit_on_sigterm) as pool:
        futures = {pool.submit(_build_in_child, str(root), n, threads): n for n in order}
        try:
            for future in as_completed(futures):
                name = futures[future]
                try:
                    done[name] = future.result()  # a failed build raises here
                except BrokenProcessPool as exc:  # its process was killed (memory, a signal)
                    raise RuntimeError(f"building the demo model {name}: {exc}") from exc
                if on_built is not None:
                    on_built(name, done[name])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return done


def build_all(
    root: Path,
    names: Iterable[str] | None = None,
    force: bool = False,
    on_built: Callable[[str, Metrics], None] | None = None,
) -> dict[str, Metrics]:
    """Build the named models (default: all) into `root/<name>/`, skipping complete ones;
    two or more side by side on a machine with cores to spare (_build_side_by_side).

    Returns every requested model's metrics (read back from metrics.json when cached);
    `on_built(name, metrics)` is called only for models built by this call.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    wanted = list(BUILDERS) if names is None else list(names)
    unknown = [n for n in wanted if n not in BUILDERS]
    if unknown:
        raise KeyError(f"unknown demo models {unknown}; known: {sorted(BUILDERS)}")
    results: dict[str, Metrics] = {}
    todo: list[str] = []
    for name in dict.fromkeys(wanted):
        if is_built(root / name) and not force:
            results[name] = json.loads((root / name / METRICS_FILE).read_text())
        else:
            todo.append(name)
    if len(todo) > 1 and _cores() > 1:
        results.update(_build_side_by_side(root, todo, on_built))
    else:
        for name in todo:
            results[name] = _build_one(root, name)
            if on_built is not None:
                on_built(name, results[name])
    return {name: results[name] for name in wanted}
