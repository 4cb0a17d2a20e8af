"""The GPU choices, checked on a CPU: with GPUs in the Ray cluster the model actor asks for
one (its share), runs its model on `cuda` in the precision SLUICE_INFERENCE_DTYPE resolves
to there, and tokenises off the model's thread; without, it stays on the CPU in float32. The
cluster's resources and torch.cuda are mocked: no test here needs a GPU."""

from pathlib import Path
from typing import Any

import pytest
import torch

from schemas.catalog import load_catalog
from schemas.errors import ConfigError
from schemas.settings import Settings
from workers.handlers import handler_for
from workers.handlers.text import TextHandler
from workers.runtime import actor_directory
from workers.runtime.devices import pick_device, resolve_dtype
from workers.runtime.model_core import ModelCore
from workers.runtime.options import ActorOptions


class FakeRemote:
    """Records the options the actor is created with (instead of starting it)."""

    def __init__(self) -> None:
        self.options_seen: dict[str, Any] = {}

    def options(self, **kwargs: Any) -> "FakeRemote":
        self.options_seen = kwargs
        return self

    def remote(self, *args: Any) -> str:
        self.args = args
        return "actor"


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> Any:
    def cluster(resources: dict[str, float]) -> FakeRemote:
        remote = FakeRemote()

        def no_actor_yet(name: str, namespace: str) -> Any:
            raise ValueError(f"no actor {name}")

        monkeypatch.setattr(actor_directory.ray, "get_actor", no_actor_yet)
        monkeypatch.setattr(actor_directory.ray, "cluster_resources", lambda: resources)
        monkeypatch.setattr(actor_directory, "RemoteModelActor", remote)
        return remote

    return cluster


def make_actor(settings: Settings) -> None:
    spec = load_catalog().get("embed")
    actor_directory.get_actor(spec, "all-MiniLM-L6-v2", "/models/m", "v1", 0, settings)


def test_a_cluster_with_gpus_gives_the_actor_its_gpu_share(fake_cluster: Any) -> None:
    remote = fake_cluster({"CPU": 16.0, "GPU": 2.0})
    make_actor(Settings(gpu_fraction=0.5))
    assert remote.options_seen["num_gpus"] == 0.5


def test_a_cluster_without_gpus_asks_for_none(fake_cluster: Any) -> None:
    remote = fake_cluster({"CPU": 2.0})
    make_actor(Settings(gpu_fraction=0.5))
    assert remote.options_seen["num_gpus"] == 0


def test_the_cpu_actor_that_isolates_a_crash_never_asks_for_float16(fake_cluster: Any) -> None:
    remote = fake_cluster({"CPU": 16.0, "GPU": 1.0})
    settings = Settings(inference_dtype="float16")
    actor_directory.private_actor(
        load_catalog().get("embed"), "/models/m", "0123abcd", "iso", settings
    )
    assert remote.options_seen["num_gpus"] == 0
    assert remote.args[3]["inference_dtype"] == "float32"  # CPUs lack float16 kernels
    make_actor(settings)
    assert remote.args[3]["inference_dtype"] == "float16"  # the shared one, on the GPU


def test_the_actor_runs_on_cuda_only_with_a_gpu_from_ray_that_torch_sees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device([0]) == "cuda"
    assert pick_device([]) == "cpu"  # Ray gave this actor no GPU (a CPU-only replica)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device([0]) == "cpu"  # a GPU id but no driver: never a crash on .to()


def test_the_precision_auto_picks_and_what_it_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_dtype("auto", "cuda") == "bfloat16"
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("float16", "cuda") == "float16"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_dtype("auto", "cuda") == "float32"  # a V100 or a T4: float32 unless asked
    with pytest.raises(ConfigError, match="float16 needs a GPU.*use float32 or bfloat16"):
        resolve_dtype("float16", "cpu")
    with pytest.raises(ConfigError, match="not one of auto, float32, bfloat16, float16"):
        resolve_dtype("float8", "cuda")


def test_the_setting_reaches_the_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.runtime.options import actor_options

    monkeypatch.setenv("SLUICE_INFERENCE_DTYPE", "bfloat16")
    monkeypatch.setenv("SLUICE_MAX_BATCH_TOKENS", "4096")
    options = actor_options(Settings(), load_catalog().get("embed"))
    again = ActorOptions.model_validate(options.model_dump(mode="json"))  # as Ray carries it
    assert (again.inference_dtype, again.max_batch_tokens) == ("bfloat16", 4096)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> str:
    from producers.model_refs import resolve

    spec = load_catalog().get("embed")
    return str(resolve("all-MiniLM-L6-v2", spec, tmp_path_factory.mktemp("models")).path)


def options(dtype: str = "auto") -> ActorOptions:
    return ActorOptions(
        max_batch_size=8,
        max_batch_wait_ms=0,
        explain_batch_size=1,
        idle_seconds=0,
        inference_dtype=dtype,
    )


def test_on_a_gpu_the_text_model_moves_to_cuda_in_bfloat16_and_tokenises_apart(
    minilm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    moves: list[tuple[Any, Any]] = []

    def spy_to(self: torch.nn.Module, device: Any = None, dtype: Any = None) -> torch.nn.Module:
        moves.append((device, dtype))  # recorded, not moved: there is no GPU here
        return self

    monkeypatch.setattr(torch.nn.Module, "to", spy_to)
    core = ModelCore.load(handler_for(load_catalog().get("embed")), minilm, "cuda", options())
    try:
        assert moves == [(torch.device("cuda"), torch.bfloat16)]
        assert core.stats()["dtype"] == "bfloat16"
        assert core.preprocess_executor is not core.executor
    finally:
        core.close()


def test_on_the_cpu_the_model_stays_in_float32_and_tokenises_on_its_thread(minilm: str) -> None:
    core = ModelCore.load(handler_for(load_catalog().get("embed")), minilm, "cpu", options())
    try:
        assert isinstance(core.handler, TextHandler)
        assert {p.dtype for p in core.handler.model.parameters()} == {torch.float32}
        assert core.preprocess_executor is core.executor
    finally:
        core.close()


def test_bfloat16_embeddings_are_float32_lists_close_to_float32_ones(minilm: str) -> None:
    from schemas.jobs import Item

    spec = load_catalog().get("embed")
    texts = ["The invoice is wrong.", "为什么这个月的账单比上个月多了二十元？", "Wi-Fi drops " * 20]
    vectors = {}
    for dtype in ("float32", "bfloat16"):
        core = ModelCore.load(handler_for(spec), minilm, "cpu", options(dtype))
        handler = core.handler
        features = [handler.preprocess(Item(key=str(n), text=t), {}) for n, t in enumerate(texts)]
        vectors[dtype] = [out["embedding"] for out in handler.predict(features)]
        core.close()
    for full, half in zip(vectors["float32"], vectors["bfloat16"], strict=True):
        assert all(type(v) is float for v in half)
        cosine = sum(a * b for a, b in zip(full, half, strict=True))  # both unit length
        assert cosine > 0.99


def test_gpu_check_refuses_to_run_without_a_gpu(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        pytest.skip("this host has nvidia-smi; the refusal is for hosts without a GPU")
    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.sh"
    done = subprocess.run(
        ["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "needs an NVIDIA GPU" in done.stderr
