"""Object-store locations (issue 20) against a real S3 HTTP endpoint (moto's server): where a
URI may point, reads pinned to what was submitted, models copied by digest."""

import json
import shutil
import socket
from pathlib import Path

import pytest

from producers.adapters.media_items import media_item
from schemas.errors import MediaRefError, ModelLocationError, ObjectStoreError
from schemas.object_refs import confined_uri, normalised_uri, prefixes_within
from schemas.settings import Settings
from storage.media_sources import item_bytes
from storage.model_artifacts import ModelCache, publish, tree_digest
from storage.object_store import ObjectStore
from tests.conftest import Bucket


def test_a_uri_has_one_spelling_and_a_prefix_matches_whole_segments() -> None:
    assert normalised_uri("S3://b/a%2F..%2Fb/c.png") == "s3://b/a%2F..%2Fb/c.png"  # literal
    for bad in ("s3://b/x/../y.png", "s3://b//y.png", "s3:///y", "s3://b/./y", "s3://b/y?v=1"):
        with pytest.raises(MediaRefError):
            normalised_uri(bad)
    prefixes = ("s3://b/media/",)
    assert confined_uri("s3://b/media/x/1.png", prefixes) == "s3://b/media/x/1.png"
    with pytest.raises(MediaRefError, match="outside the object-store prefixes"):
        confined_uri("s3://b/media-private/1.png", prefixes)
    with pytest.raises(MediaRefError, match="SLUICE_OBJECT_PREFIXES"):
        confined_uri("s3://b/media/1.png", ())
    # a tenant's prefixes count only inside the server's
    assert prefixes_within(["s3://b/media/acme", "s3://other/x"], prefixes) == (
        "s3://b/media/acme/",
    )


def test_an_object_replaced_after_submit_is_refused_with_the_reason(bucket: Bucket) -> None:
    settings = Settings(object_prefixes=f"{bucket.uri}/media/", storage_options=bucket.options)
    s3 = bucket.client()
    s3.put_object(Bucket=bucket.name, Key="media/a.png", Body=b"first")
    item = media_item("a", f"{bucket.uri}/media/a.png", None, settings)
    assert item.invalid is None and item.stamp and item.path == f"{bucket.uri}/media/a.png"
    store, limits = ObjectStore(bucket.options), settings.media_limits()
    assert item_bytes(item.data, item.path, item.stamp, limits, store) == b"first"
    s3.put_object(Bucket=bucket.name, Key="media/a.png", Body=b"second")
    with pytest.raises(MediaRefError, match="changed after it was submitted"):
        item_bytes(item.data, item.path, item.stamp, limits, store)
    # outside the prefixes, missing, empty: refused at submit, each with its reason
    s3.put_object(Bucket=bucket.name, Key="private/b.png", Body=b"x")
    s3.put_object(Bucket=bucket.name, Key="media/empty.png", Body=b"")
    why = {
        k: media_item(k, f"{bucket.uri}/{k}", None, settings).invalid
        for k in ("private/b.png", "media/none.png", "media/empty.png")
    }
    assert "outside the object-store prefixes" in str(why["private/b.png"])
    assert "no such object" in str(why["media/none.png"])
    assert "empty object" in str(why["media/empty.png"])
    # a worker narrowed to a tenant's prefixes reads nothing outside them
    narrowed = limits.narrowed_to([], [f"{bucket.uri}/media/acme/"])
    with pytest.raises(MediaRefError, match="outside"):
        item_bytes(None, item.path, None, narrowed, store)


def test_a_model_is_copied_once_per_host_by_digest_and_a_changed_one_is_refused(
    bucket: Bucket, tiny_classifier: Path, tmp_path: Path
) -> None:
    store = ObjectStore(bucket.options)
    source = tmp_path / "model"
    shutil.copytree(tiny_classifier, source)
    uri = publish(source, f"{bucket.uri}/models/tiny", store)
    assert uri == f"{bucket.uri}/models/tiny"
    assert {o.uri.rsplit("/", 1)[1] for o in store.list_objects(uri)} == {
        p.name for p in source.iterdir()
    }
    producer = ModelCache(tmp_path / "producer-cache", store)
    path, digest = producer.fetch(uri)
    assert digest == tree_digest(tiny_classifier)[:16]  # every file, by path and bytes
    assert (path / "config.json").is_file()
    # another host: its own cache, copied and checked against the digest of the job
    worker = ModelCache(tmp_path / "worker-cache", store)
    loaded = worker.materialise(uri, digest)
    assert loaded == tmp_path / "worker-cache" / digest
    assert worker.materialise(uri, digest) == loaded  # from the cache, not fetched again
    # the model is replaced in the bucket after submit: a host without a copy refuses it
    config = json.loads((loaded / "config.json").read_text())
    config["id2label"] = {"0": "praise", "1": "billing"}
    bucket.client().put_object(
        Bucket=bucket.name, Key="models/tiny/config.json", Body=json.dumps(config).encode()
    )
    late = ModelCache(tmp_path / "late-cache", store)
    with pytest.raises(ModelLocationError, match="changed after the job was submitted"):
        late.materialise(uri, digest)
    # a prefix over the size cap is refused before anything is copied
    small = ModelCache(tmp_path / "small-cache", store, max_bytes=1000)
    with pytest.raises(ModelLocationError, match="SLUICE_MAX_MODEL_BYTES"):
        small.fetch(uri)
    assert not (tmp_path / "small-cache").exists()
    # a local directory this host lacks: the message names it and the host
    with pytest.raises(ModelLocationError) as refused:
        late.materialise(str(tmp_path / "nowhere"), digest)
    assert str(tmp_path / "nowhere") in str(refused.value)
    assert socket.gethostname() in str(refused.value)


def test_store_errors_name_the_location_and_the_host(bucket: Bucket) -> None:
    store = ObjectStore(bucket.options)
    with pytest.raises(ObjectStoreError) as missing:
        store.read(f"{bucket.uri}/nothing.png", 100)
    assert f"{bucket.uri}/nothing.png" in str(missing.value)
    assert socket.gethostname() in str(missing.value)
    bucket.client().put_object(Bucket=bucket.name, Key="big.bin", Body=b"x" * 200)
    with pytest.raises(ObjectStoreError, match="over the cap of 100"):
        store.read(f"{bucket.uri}/big.bin", 100)


def test_keys_that_would_land_outside_the_copy_are_refused(bucket: Bucket, tmp_path: Path) -> None:
    s3 = bucket.client()
    s3.put_object(Bucket=bucket.name, Key="m/config.json", Body=b"{}")
    s3.put_object(Bucket=bucket.name, Key="m/../../../../escaped.json", Body=b"{}")
    cache = ModelCache(tmp_path / "a" / "b" / "cache", ObjectStore(bucket.options))
    with pytest.raises(ObjectStoreError, match="not a plain path"):
        cache.fetch(f"{bucket.uri}/m")
    s3.delete_object(Bucket=bucket.name, Key="m/../../../../escaped.json")
    s3.put_object(Bucket=bucket.name, Key="m//tmp/escaped.json", Body=b"{}")
    with pytest.raises(ObjectStoreError, match="not a plain path"):
        cache.fetch(f"{bucket.uri}/m")
    assert not list(tmp_path.rglob("escaped.json"))


def test_every_file_counts_in_a_model_digest_by_name_and_bytes(tmp_path: Path) -> None:
    def tree(files: dict[str, str]) -> str:
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return tree_digest(root)

    base = {"config.json": "{}", "vocab.txt": "a\nb\n"}
    assert tree(base) == tree(dict(base))
    assert tree(base) != tree({**base, "chat_template.jinja": "{{ evil }}"})  # any file
    assert tree(base) != tree({**base, "1_Pooling/config.json": "{}"})  # sub-folders too
    # the same bytes split differently between files is another model
    assert tree({"config.json": "{}", "merges.txt": "a\n", "vocab.txt": "b\n"}) != tree(base)


def test_a_versioned_bucket_and_odd_keys_read_as_submitted(bucket: Bucket) -> None:
    from producers.adapters import adapter_for
    from schemas.modalities import Modality

    s3 = bucket.client()
    s3.put_bucket_versioning(Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"})
    for key in ("media/a.png", "media/100%25.png", "media/sub/b c.png"):
        s3.put_object(Bucket=bucket.name, Key=key, Body=key.encode())
    settings = Settings(object_prefixes=f"{bucket.uri}/media/", storage_options=bucket.options)
    items = adapter_for(Modality.IMAGE).items_from_prefix(f"{bucket.uri}/media", settings)
    assert sorted(i.key for i in items) == ["100%25.png", "a.png", "sub/b c.png"]
    store, limits = ObjectStore(bucket.options), settings.media_limits()
    for item in items:  # the listing's stamp is the one a worker's HEAD sees
        assert (
            item_bytes(None, item.path, item.stamp, limits, store) == f"media/{item.key}".encode()
        )
