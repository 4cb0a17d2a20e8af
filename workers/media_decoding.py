"""Decoding media safely, in the model actor: the reference is checked against the input
roots again, sizes are capped before decoding, and any failure is one item's `invalid`."""

import io
import math
import socket
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from schemas.errors import InvalidInput, MediaRefError
from schemas.jobs import Item
from schemas.media_refs import MediaLimits
from schemas.settings import Settings
from storage.media_sources import item_bytes
from storage.object_store import ObjectStore

MAX_SAMPLE_RATE = 384_000  # the highest rate audio hardware records at
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}


# The key of a handler's params under which the model actor gives it the job's MediaLimits.
MEDIA_LIMITS = "media_limits"


def limits_to_json(limits: MediaLimits) -> dict[str, Any]:
    """The JSON form the limits cross into the model actor in."""
    return {**asdict(limits), "roots": list(limits.roots), "prefixes": list(limits.prefixes)}


def limits_from_json(raw: Mapping[str, Any] | None) -> MediaLimits:
    """Limits from their JSON form; none given: the defaults, under which no file is read."""
    fields = dict(raw or {})
    fields["roots"] = tuple(fields.get("roots", ()))
    fields["prefixes"] = tuple(fields.get("prefixes", ()))
    return MediaLimits(**fields)


def job_limits(settings: Settings, params: Mapping[str, Any]) -> MediaLimits:
    """The limits a job's media are read under on this worker: the worker's own, narrowed
    to the roots and prefixes recorded for an API tenant's job (producers/job_specs.py)."""
    limits = settings.media_limits()
    if (roots := params.get("input_roots")) is not None:
        limits = limits.narrowed_to(list(roots), list(params.get("object_prefixes") or []))
    return limits


def limits_from(params: Mapping[str, Any]) -> MediaLimits:
    """The limits a handler reads media under. The model actor passes them typed; a caller
    without one (a test, a recipe's evaluation) may pass their JSON form."""
    raw = params.get(MEDIA_LIMITS)
    return raw if isinstance(raw, MediaLimits) else limits_from_json(raw)


class _Objects:
    # The object store media are read from in this process: the model actor sets it once at
    # start from its worker's SLUICE_STORAGE_OPTIONS (handlers are given limits, not stores).
    store = ObjectStore()


def use_object_store(store: ObjectStore) -> None:
    _Objects.store = store


def read_bytes(item: Item, limits: MediaLimits) -> bytes:
    try:
        return item_bytes(item.data, item.path, item.stamp, limits, _Objects.store)
    except MediaRefError as exc:
        where = socket.gethostname()  # hosts share no paths: say which one could not read it
        message = str(exc) if where in str(exc) else f"{exc} (read on host {where})"
        raise InvalidInput(message) from exc


def load_image(item: Item, limits: MediaLimits) -> Any:
    """An RGB PIL image. The header is read first: an image over the pixel cap (a
    decompression bomb) is refused before a single pixel is decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    data = read_bytes(item, limits)
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels  # Pillow's own guard, at twice the cap
    try:
        with warnings.catch_warnings():  # between 1x and 2x the cap: refused just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"not a readable image (PNG, JPEG, WebP...): {exc}") from exc
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"image refused as a decompression bomb: {exc}") from exc
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise InvalidInput(
            f"image is {width}x{height} = {width * height} pixels, over the cap "
            f"of {limits.max_image_pixels} (SLUICE_MAX_IMAGE_PIXELS)"
        )
    if image.format not in IMAGE_FORMATS:
        raise InvalidInput(
            f"image format {image.format} is not accepted ({', '.join(sorted(IMAGE_FORMATS))})"
        )
    try:
        image.load()
        # upright as its EXIF orientation says (a phone's photo), as transformers' pipelines
        # read images: boxes and sizes are then in the picture a person sees
        return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"corrupt or truncated image: {exc}") from exc


def load_audio(item: Item, limits: MediaLimits, sample_rate: int) -> np.ndarray:
    """Mono float32 samples at `sample_rate`. The duration is read from the header and
    capped before the samples are decoded."""
    import soundfile as sf

    data = read_bytes(item, limits)
    try:
        with sf.SoundFile(io.BytesIO(data)) as fh:
            if fh.samplerate <= 0 or fh.frames <= 0:
                raise InvalidInput("audio file holds no samples")
            seconds = fh.frames / fh.samplerate
            if fh.samplerate > MAX_SAMPLE_RATE:  # resampling from it would need a huge filter
                raise InvalidInput(
                    f"audio sampled at {fh.samplerate} Hz, over the {MAX_SAMPLE_RATE} Hz Sluice "
                    "reads"
                )
            if fh.channels > limits.max_audio_channels:
                raise InvalidInput(
                    f"audio has {fh.channels} channels, over the cap of "
                    f"{limits.max_audio_channels} (SLUICE_MAX_AUDIO_CHANNELS)"
                )
            decoded = fh.frames * fh.channels * 4
            if decoded > limits.max_audio_decoded_bytes:
                raise InvalidInput(
                    f"audio would decode to {decoded} bytes, over the cap of "
                    f"{limits.max_audio_decoded_bytes} (SLUICE_MAX_AUDIO_DECODED_BYTES)"
                )
            if seconds > limits.max_audio_seconds:
                raise InvalidInput(
                    f"audio is {seconds:.1f} s long, over the cap of "
                    f"{limits.max_audio_seconds:g} s (SLUICE_MAX_AUDIO_SECONDS)"
                )
            samples = fh.read(dtype="float32", always_2d=True)
            source_rate = fh.samplerate
    except InvalidInput:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError) as exc:
        raise InvalidInput(f"not a readable audio file (WAV, FLAC, OGG, MP3): {exc}") from exc
    if samples.shape[0] == 0:
        raise InvalidInput("audio file holds no samples")
    mono = samples.mean(axis=1)
    if not np.isfinite(mono).all():
        raise InvalidInput("audio holds non-finite samples")
    return resample(mono, source_rate, sample_rate)


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate:
        return samples.astype(np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(source_rate, target_rate)
    return resample_poly(samples, target_rate // g, source_rate // g).astype(np.float32)
