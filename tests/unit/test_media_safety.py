"""What a media reference may point at, and what a hostile file does to a worker: nothing
but an `invalid` item with a message that says why."""

import base64
import os
from pathlib import Path

import numpy as np
import pytest

from producers.adapters.media_items import MediaItems, media_item
from schemas.errors import InvalidInput, MediaRefError
from schemas.jobs import Item
from schemas.media_refs import MediaLimits, confined_path, parse_reference
from schemas.modalities import Modality
from schemas.settings import Settings
from tests.media_files import bomb_png, png_bytes, write_audio
from workers.media_decoding import load_audio, load_image


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    return (tmp_path / "in").resolve()


def limits(root: Path, **caps: float) -> MediaLimits:
    return MediaLimits(roots=(str(root),), **caps)  # type: ignore[arg-type]


def test_references_outside_the_input_roots_are_refused(root: Path, tmp_path: Path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    (root / "ok.png").write_bytes(png_bytes())
    (root / "link.png").symlink_to(secret)
    roots = [root]
    assert confined_path(str(root / "ok.png"), roots, 10**6) == root / "ok.png"
    with pytest.raises(MediaRefError, match="outside the input roots.*its links followed") as e:
        confined_path(str(root / "link.png"), roots, 10**6)
    assert str(secret) not in str(e.value)  # where the link points is not told
    with pytest.raises(MediaRefError, match="outside the input roots"):
        confined_path(str(secret), roots, 10**6)
    with pytest.raises(MediaRefError, match="contains '..'"):
        parse_reference("in/../secret.png", tmp_path)
    with pytest.raises(MediaRefError, match="another host"):
        parse_reference("file://files.example.com/in/ok.png", None)
    with pytest.raises(MediaRefError, match="https:// references are not fetched"):
        parse_reference("https://example.com/cat.png", None)
    with pytest.raises(MediaRefError, match="no input roots are open to this job"):
        confined_path(str(root / "ok.png"), [], 10**6)
    assert parse_reference(f"file://{root}/ok%20name.png", None) == ("path", f"{root}/ok name.png")


def test_submit_marks_each_bad_reference_invalid_and_keeps_the_rest(root: Path, tmp_path: Path):
    settings = Settings(input_roots=str(root), max_inline_bytes=1000, max_media_bytes=5000)
    (root / "a.png").write_bytes(png_bytes())
    (root / "empty.wav").write_bytes(b"")
    (root / "big.png").write_bytes(png_bytes((64, 64)))
    small = base64.b64encode(png_bytes((4, 4))).decode()
    large = base64.b64encode(png_bytes((64, 64))).decode()
    cases = {
        "a": (str(root / "a.png"), None),
        "inline": (f"data:image/png;base64,{small}", None),
        "too-big-inline": (f"data:image/png;base64,{large}", "over the cap of 1000"),
        "not-base64": ("data:image/png;base64,@@@", "not valid base64"),
        "empty": (str(root / "empty.wav"), "empty file (0 bytes)"),
        "big": (str(root / "big.png"), "over the cap of 5000 (SLUICE_MAX_MEDIA_BYTES)"),
        "missing": (str(root / "nope.png"), "no such file"),
        "outside": ("/etc/hostname", "outside the input roots"),
        "number": (7, "media reference is a int"),
    }
    for key, (value, problem) in cases.items():
        item = media_item(key, value, None, settings)
        if problem is None:
            assert item.invalid is None and (item.path or item.data), key
        else:
            assert item.invalid is not None and problem in item.invalid, (key, item.invalid)
    items = MediaItems(Modality.IMAGE).items_from_folder(root, settings)
    assert [i.key for i in items] == ["a.png", "big.png"]


def test_hostile_images_become_invalid_items(root: Path):
    lim = limits(root)
    files = {
        "good.png": png_bytes(),
        "truncated.png": png_bytes((64, 64))[:300],
        "random.png": np.random.default_rng(1).bytes(4000),
        "bomb.png": bomb_png(100_000, 100_000),  # 10^10 pixels: Pillow's own guard trips
        "large.png": bomb_png(7_000, 7_000),  # 49M pixels: over our 40M cap, under 2x
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    image = load_image(Item(key="g", path=str(root / "good.png")), lim)
    assert image.size == (32, 32) and image.mode == "RGB"
    expected = {
        "truncated.png": "corrupt or truncated image",
        "random.png": "not a readable image",
        "bomb.png": "decompression bomb",
        "large.png": "7000x7000 = 49000000 pixels, over the cap of 40000000",
    }
    for name, message in expected.items():
        with pytest.raises(InvalidInput, match=message):
            load_image(Item(key=name, path=str(root / name)), lim)
    inline = base64.b64encode(png_bytes((8, 8))).decode()
    assert load_image(Item(key="i", data=inline), lim).size == (8, 8)


def test_audio_is_decoded_resampled_down_mixed_and_capped(root: Path):
    lim = limits(root, max_audio_seconds=3.0)
    stereo = write_audio(root / "stereo.wav", 1.0, 22_050, channels=2)
    flac = write_audio(root / "eight.flac", 0.5, 8_000)
    ogg = write_audio(root / "tone.ogg", 0.5, 44_100)
    mp3 = write_audio(root / "tone.mp3", 0.5, 44_100)
    long = write_audio(root / "long.wav", 4.0, 8_000)
    (root / "random.wav").write_bytes(np.random.default_rng(2).bytes(5000))
    samples = load_audio(Item(key="s", path=str(stereo)), lim, 16_000)
    assert samples.ndim == 1 and samples.dtype == np.float32 and len(samples) == 16_000
    assert abs(float(np.abs(samples).max()) - 0.5) < 0.02  # down-mixed, not summed
    assert len(load_audio(Item(key="f", path=str(flac)), lim, 16_000)) == 8_000
    assert len(load_audio(Item(key="o", path=str(ogg)), lim, 16_000)) == 8_000
    assert abs(len(load_audio(Item(key="m", path=str(mp3)), lim, 16_000)) - 8_000) < 1200
    with pytest.raises(InvalidInput, match="4.0 s long, over the cap of 3 s"):
        load_audio(Item(key="l", path=str(long)), lim, 16_000)
    with pytest.raises(InvalidInput, match="not a readable audio file"):
        load_audio(Item(key="r", path=str(root / "random.wav")), lim, 16_000)


def test_the_worker_checks_the_roots_again(root: Path, tmp_path: Path):
    """A path accepted at submit is refused by a worker whose roots do not contain it, and a
    file swapped for a symlink after submit is refused too."""
    (root / "a.png").write_bytes(png_bytes())
    item = Item(key="a", path=str(root / "a.png"))
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(InvalidInput, match="outside the input roots"):
        load_image(item, limits(other))
    (root / "a.png").unlink()
    (tmp_path / "elsewhere.png").write_bytes(png_bytes())
    os.symlink(tmp_path / "elsewhere.png", root / "a.png")
    with pytest.raises(InvalidInput, match="outside the input roots"):
        load_image(item, limits(root))


def test_audio_too_big_to_decode_is_refused_from_its_header(root: Path):
    """Channels and decoded size are read from the header: a many-channel or very long file
    is refused before a sample is decoded (the caps are settings)."""
    wide = write_audio(root / "wide.wav", 0.5, 8_000, channels=9)
    big = write_audio(root / "big.wav", 2.0, 8_000, channels=2)  # 2 s x 8 kHz x 2 x 4 bytes
    with pytest.raises(InvalidInput, match=r"9 channels, over the cap of 8"):
        load_audio(Item(key="w", path=str(wide)), limits(root), 16_000)
    tight = limits(root, max_audio_decoded_bytes=100_000)
    with pytest.raises(InvalidInput, match=r"decode to 128000 bytes, over the cap of 100000"):
        load_audio(Item(key="b", path=str(big)), tight, 16_000)
    assert len(load_audio(Item(key="b", path=str(big)), limits(root), 16_000)) == 32_000


def test_audio_at_an_absurd_sample_rate_is_refused_before_resampling(root: Path):
    import soundfile as sf

    path = root / "fast.wav"
    sf.write(path, np.zeros(2000, dtype=np.float32), 9_999_991)
    with pytest.raises(InvalidInput, match="sampled at 9999991 Hz, over the 384000 Hz"):
        load_audio(Item(key="f", path=str(path)), limits(root), 16_000)
