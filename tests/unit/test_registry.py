"""The model registry, on SQLite and (when configured) PostgreSQL: numbered versions, one
production version per name, and errors that say what to do."""

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from schemas.errors import ModelError, SluiceError
from schemas.tenants import PUBLIC
from storage.engine import make_engine, migrate
from storage.model_shares import ModelShares
from storage.registry import Registry, RegistryError


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def registry(engine: Engine) -> Registry:
    return Registry(engine)


def add(registry: Registry, name: str = "spam", task: str = "classify-text", **kwargs: Any) -> int:
    return registry.register(
        name, task, f"/models/{name}", "ab" * 32, {"f1": 0.9}, **kwargs
    ).version


def test_versions_count_up_per_name(registry: Registry):
    assert [add(registry) for _ in range(3)] == [1, 2, 3]
    assert add(registry, "fraud", "classify-records") == 1
    view = registry.get("spam", 2)
    assert (view.ref, view.stage, view.metrics, view.tenant) == (
        "spam@2",
        "staging",
        {"f1": 0.9},
        "default",
    )
    assert view.created_at.tzinfo is not None
    assert registry.names() == ["fraud", "spam"]
    assert [v.ref for v in registry.list()] == ["fraud@1", "spam@1", "spam@2", "spam@3"]
    assert [v.ref for v in registry.list("spam")][-1] == "spam@3"


def test_lineage_and_privacy_are_kept(registry: Registry):
    dp = {"epsilon": 3.0, "delta": 1e-5, "noise_multiplier": 1.1, "max_grad_norm": 1.0}
    registry.register(
        "spam",
        "classify-text",
        "/m",
        "00" * 32,
        {},
        training_run_id="tr_1",
        data_fingerprint="f" * 64,
        dp=dp,
        tenant="acme",
    )
    view = registry.resolve("spam@1", "acme")
    assert (view.training_run_id, view.data_fingerprint, view.dp, view.tenant) == (
        "tr_1",
        "f" * 64,
        dp,
        "acme",
    )
    assert registry.list(tenant="acme") == [view] and registry.list(tenant="other") == []


def test_a_name_keeps_its_task(registry: Registry):
    add(registry, "spam", "classify-text")
    with pytest.raises(RegistryError, match="'spam' is a classify-text model.*another name"):
        add(registry, "spam", "classify-image")
    assert isinstance(RegistryError("x"), SluiceError)


def test_promote_archives_the_previous_production_version(registry: Registry):
    for _ in range(3):
        add(registry)
    assert registry.promote("spam", 1).stage == "production"
    assert registry.promote("spam", 2).stage == "production"
    assert [v.stage for v in registry.list("spam")] == ["archived", "production", "staging"]
    assert registry.get("spam", "production").version == 2
    assert registry.resolve("spam@production").version == 2
    # Rolling back: an archived version may be promoted again.
    assert registry.promote("spam", 1).stage == "production"
    assert [v.stage for v in registry.list("spam")] == ["production", "archived", "staging"]
    assert registry.promote("spam", 1).stage == "production"  # promoting twice is harmless


def test_selectors(registry: Registry):
    for _ in range(3):
        add(registry)
    registry.promote("spam", 2)
    assert registry.get("spam", "staging").version == 3
    assert registry.get("spam", "latest").version == 3
    assert registry.get("spam", "2").version == 2
    registry.archive("spam", 3)
    assert registry.get("spam", "staging").version == 1
    assert registry.get("spam", "latest").version == 2
    registry.archive("spam", 1)
    assert registry.get("spam", 3).stage == "archived"  # old jobs stay reproducible
    with pytest.raises(RegistryError, match="no staging version.*e.g. spam@3"):
        registry.get("spam", "staging")
    registry.archive("spam", 2)  # nothing serves now, but every version is still there
    with pytest.raises(RegistryError, match="only archived versions.*sluice models promote"):
        registry.get("spam", "latest")
    assert registry.get("spam", 2).stage == "archived"


def test_errors_say_what_to_do(registry: Registry):
    with pytest.raises(RegistryError, match="you have no registered models; train one"):
        registry.get("spam", "latest")
    add(registry)
    add(registry)
    add(registry, "fraud", "classify-records")
    with pytest.raises(RegistryError, match="no model named 'spma'; known models: fraud, spam"):
        registry.get("spma", 1)
    with pytest.raises(
        RegistryError,
        match=r"has no version 7; its versions: 1 \(staging\), "
        r"2 \(staging\)",
    ):
        registry.get("spam", 7)
    with pytest.raises(
        RegistryError,
        match="model 'spam' has no production version; promote "
        "one: sluice models promote spam VERSION",
    ):
        registry.resolve("spam@production")
    with pytest.raises(RegistryError, match="bad model reference 'spam:2'.*NAME@VERSION"):
        registry.resolve("spam:2")
    with pytest.raises(RegistryError, match="has no version 9"):
        registry.promote("spam", 9)
    with pytest.raises(RegistryError, match="no model named 'ham'"):
        registry.archive("ham", 1)
    with pytest.raises(RegistryError, match="bad model name 'Spam!'"):
        add(registry, "Spam!")


def test_many_names_are_listed_briefly(registry: Registry):
    for n in range(12):
        add(registry, f"m{n:02d}")
    with pytest.raises(RegistryError, match=r"m09 \(and 2 more\)$"):
        registry.get("nope", 1)


def test_concurrent_registrations_get_distinct_versions(registry: Registry):
    add(registry)  # then eight writers race for versions 2 to 9
    barrier, versions, errors = threading.Barrier(8), [], []

    def register() -> None:
        try:
            barrier.wait()
            versions.append(add(registry))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and sorted(versions) == list(range(2, 10))


def test_concurrent_first_registrations_get_distinct_versions(registry: Registry):
    barrier, versions = threading.Barrier(8), []

    def register() -> None:
        barrier.wait()
        versions.append(add(registry, "fresh"))

    threads = [threading.Thread(target=register) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(versions) == list(range(1, 9))


def test_names_and_stages_belong_to_a_tenant(registry: Registry):
    """acme's `spam` and globex's `spam` are two models: their own versions and stages, and
    neither learns that the other exists."""
    assert add(registry, tenant="acme") == 1
    assert add(registry, tenant="acme") == 2
    assert add(registry, "spam", "classify-image", tenant="globex") == 1  # its own task too
    registry.promote("spam", 2, "acme")
    registry.promote("spam", 1, "globex")
    assert registry.get("spam", "production", "acme").version == 2
    assert registry.get("spam", "production", "globex").task == "classify-image"
    assert registry.get("spam", 1, "acme").stage == "staging"  # globex's promote left it
    with pytest.raises(RegistryError) as refused:
        registry.resolve("spam@1", "initech")
    assert "spam" in str(refused.value) and "acme" not in str(refused.value)
    assert "you have no registered models" in str(refused.value)
    add(registry, "secret-fraud", tenant="acme")
    with pytest.raises(RegistryError) as refused:
        registry.resolve("nope@1", "globex")
    assert "secret-fraud" not in str(refused.value) and "known models: spam" in str(refused.value)
    with pytest.raises(RegistryError, match="no model named 'secret-fraud'"):
        registry.promote("secret-fraud", 1, "globex")
    assert registry.names("globex") == ["spam"]


def test_a_shared_name_resolves_like_ones_own_but_its_stages_are_the_owners(
    registry: Registry, engine: Engine
):
    shares = ModelShares(engine)
    add(registry, "digits", "classify-image")
    add(registry, "digits", "classify-image")
    registry.promote("digits", 1, "default")
    shares.share("default", "digits", None, "acme")
    view = registry.resolve("digits@production", "acme")
    assert (view.tenant, view.version) == ("default", 1)
    registry.promote("digits", 2, "default")  # the owner moves production: acme follows
    assert registry.resolve("digits@production", "acme").version == 2
    with pytest.raises(RegistryError, match="only its owner changes its stages"):
        registry.archive("digits", 2, "acme")
    with pytest.raises(RegistryError, match="no model named 'digits'"):
        registry.resolve("digits@production", "globex")  # not shared with globex
    assert registry.names("acme") == ["digits"] and registry.names("globex") == []


def test_sharing_one_version_or_with_everyone(registry: Registry, engine: Engine):
    shares = ModelShares(engine)
    for _ in range(3):
        add(registry, "spam")
    shares.share("default", "spam", 2, "acme")
    assert registry.resolve("spam@2", "acme").version == 2
    with pytest.raises(RegistryError, match="has no version 3; its versions: 2"):
        registry.resolve("spam@3", "acme")  # the other versions stay the owner's
    shares.share("default", "spam", None, PUBLIC)
    assert registry.resolve("spam@3", "globex").version == 3
    assert shares.unshare("default", "spam", None, PUBLIC)
    with pytest.raises(RegistryError):
        registry.resolve("spam@3", "globex")
    add(registry, "spam", tenant="globex")
    with pytest.raises(
        ModelError, match="'acme' already may use a model 'spam' shared by 'default'"
    ):
        shares.share("globex", "spam", None, "acme")
    assert registry.resolve("spam@1", "globex").tenant == "globex"  # its own name wins


def test_two_owners_cannot_share_one_name_with_the_same_tenant(registry: Registry, engine: Engine):
    """Else which owner's weights a grantee's `digits@production` runs would be arbitrary."""
    shares = ModelShares(engine)
    add(registry, "digits", tenant="a")
    add(registry, "digits", tenant="b")
    shares.share("a", "digits", None, "acme")
    with pytest.raises(ModelError, match="every tenant already may use|'acme' already may use"):
        shares.share("b", "digits", None, PUBLIC)
    shares.share("b", "digits", None, "globex")  # another grantee: no clash
    with pytest.raises(ModelError, match="every tenant already may use a model 'digits'"):
        shares.share("a", "digits", None, PUBLIC)
    assert registry.resolve("digits@1", "acme").tenant == "a"
    assert registry.resolve("digits@1", "globex").tenant == "b"
