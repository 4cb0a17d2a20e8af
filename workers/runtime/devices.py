"""Where a model actor runs and in which precision: the GPU choices, in one place.

The device is the GPU Ray gave the actor (`num_gpus` > 0 in actor_directory.get_actor when
the cluster has GPUs), else the CPU. The precision is SLUICE_INFERENCE_DTYPE:

- `auto` (the default): bfloat16 on a CUDA GPU that supports it (Ampere and later: A100,
  H100, L4, RTX 30xx+), float32 anywhere else. bfloat16 has float32's range, so a text
  encoder's activations do not overflow as they can in float16, and it halves memory and
  runs on the tensor cores: the usual choice for inference on these GPUs. float32 on the CPU,
  where bfloat16 matmuls are slower than float32 ones without AMX (and on this project's CPU
  hosts they were).
- `float32`, `bfloat16`: as asked (bfloat16 on a CPU is allowed: some CPUs run it well).
- `float16`: GPUs only (older ones without bfloat16: V100, T4); on a CPU it is refused at
  the actor's start, as most CPU kernels lack it.

Outputs leave the handler as float32 whatever the model ran in; explanations (Captum) run
through the same weights, so their convergence delta, stored with each, shows the cost of a
lower precision.
"""

from typing import Any

from schemas.errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def pick_device(gpu_ids: list[Any]) -> str:
    """`cuda` when Ray gave this actor a GPU and torch can see it, else `cpu`."""
    import torch

    return "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"


def resolve_dtype(setting: str, device: str) -> str:
    """The torch dtype name a model on `device` runs in under SLUICE_INFERENCE_DTYPE
    `setting` (see the module's note)."""
    import torch

    if setting not in DTYPES:
        raise ConfigError(
            f"SLUICE_INFERENCE_DTYPE={setting!r} is not one of {', '.join(DTYPES)}; "
            "set one of them (auto: bfloat16 on a GPU that supports it, else float32)"
        )
    on_gpu = device.startswith("cuda")
    if setting == "auto":
        # emulated bfloat16 (V100, T4) is slower than float32: only a native one counts
        native = on_gpu and torch.cuda.is_bf16_supported(including_emulation=False)
        return "bfloat16" if native else "float32"
    if setting == "float16" and not on_gpu:
        raise ConfigError(
            f"SLUICE_INFERENCE_DTYPE=float16 needs a GPU, and this model actor runs on "
            f"{device}; use float32 or bfloat16 there (or auto)"
        )
    return setting


def torch_dtype(name: str) -> Any:
    """The torch dtype of a name resolve_dtype returned."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
