"""Which layers of a Hugging Face model DP-SGD (Opacus) can train, decided on the model itself.

Opacus needs each trained parameter's gradient for every row of a batch (per-sample
gradients). Its own grad samplers cover nn.Linear, nn.Embedding, nn.LayerNorm, nn.RMSNorm
and a few more (exact types); any other layer that holds parameters goes through its
functorch fallback, which replays the layer's forward on one row's input at a time. What
was measured with Opacus 1.6 and transformers 5 (per-sample gradients against one backward
pass per row, relative error under 1e-3):

- exact: Linear, token Embedding, LayerNorm, and through functorch GPT-2's Conv1D,
  LlamaRMSNorm, T5LayerNorm and BART's scaled token embedding, tied or untied heads;
- wrong: embedding tables looked up without a batch dimension (GPT-2's and BART's position
  tables, T5's relative attention bias): their per-sample gradients come out with one row.
  They are frozen (`lookup_tables`): fine-tuning keeps the pretrained positions;
- impossible: layers whose forward needs more than its first input (BART's positional
  embedding takes the past length; mixture-of-experts blocks take the routing), layers with
  buffers (Opacus refuses them: buffers are not private), and routed experts, whose rows are
  tokens, not examples.

So families are not listed here: `check_per_sample_gradients` runs Opacus on two training
rows and compares every trainable parameter's per-sample gradients with a backward pass per
row. Parameters the forward never reaches are frozen (they would have no per-sample gradient
and learn nothing anyway); any other mismatch refuses DP for the model, naming the layer
types, before a run starts.
"""

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Loss = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
TOLERANCE = 1e-3  # relative; float32 batched vs. single-row passes agree to ~1e-6


def token_embeddings(model: nn.Module) -> list[nn.Module]:
    """The embedding tables looked up with token ids (one row per example)."""
    found = []
    for owner in (model, _call(model, "get_encoder"), _call(model, "get_decoder")):
        table = _call(owner, "get_input_embeddings") if owner is not None else None
        if isinstance(table, nn.Module):
            found.append(table)
    return found


def _call(obj: Any, method: str) -> Any:
    fn = getattr(obj, method, None)
    try:
        return fn() if callable(fn) else None
    except (NotImplementedError, AttributeError):
        return None


def lookup_tables(model: nn.Module) -> dict[str, str]:
    """Embedding tables other than the token embeddings (position tables, relative attention
    biases): looked up without a batch dimension, so without per-sample gradients."""
    tokens = {id(t) for t in token_embeddings(model)}
    token_weights = {id(getattr(t, "weight", None)) for t in token_embeddings(model)}
    return {
        name: f"{type(module).__name__}: looked up without a batch dimension"
        for name, module in model.named_modules()
        if isinstance(module, nn.Embedding)
        and id(module) not in tokens
        and id(module.weight) not in token_weights
        and module.weight.requires_grad
    }


def freeze(model: nn.Module, modules: dict[str, str]) -> None:
    """Freeze the named modules' own parameters (the names `lookup_tables` and
    `check_per_sample_gradients` give)."""
    named = dict(model.named_modules())
    for name in modules:
        for param in named[name].parameters(recurse=False):
            param.requires_grad_(False)


def check_per_sample_gradients(
    probe: nn.Module, rows: dict[str, torch.Tensor], loss: Loss
) -> tuple[dict[str, str], list[str]]:
    """Opacus's per-sample gradients of `probe` (a model loaded for this check alone: its
    modes, hooks and gradients are changed) on `rows` (two or three training rows), against a
    backward pass per row. Returns (modules to freeze: their parameters are never reached,
    {name: why}; problems that rule DP-SGD out, by layer type)."""
    from opacus.validators import ModuleValidator

    _deterministic(probe)
    problems = [str(e) for e in ModuleValidator.validate(probe, strict=False)]
    if problems:
        return {}, problems
    with warnings.catch_warnings():  # torch's and Opacus's notes on hooks are not problems
        warnings.simplefilter("ignore")
        return _compare(probe, rows, loss)


def _compare(
    probe: nn.Module, rows: dict[str, torch.Tensor], loss: Loss
) -> tuple[dict[str, str], list[str]]:
    from opacus import GradSampleModule

    params = {name: p for name, p in probe.named_parameters() if p.requires_grad}
    owner = _owners(probe)
    n = len(next(iter(rows.values())))
    try:
        wrapped = GradSampleModule(probe, strict=True)
        loss(wrapped, rows).backward()
    except Exception as exc:  # Opacus or the model refused: the reason is the message
        return {}, [f"{_culprit(exc, probe)} ({type(exc).__name__}: {exc})"[:500]]
    samples = {name: getattr(p, "grad_sample", None) for name, p in params.items()}
    wrapped.remove_hooks()
    single: dict[str, list[torch.Tensor | None]] = {name: [] for name in params}
    for i in range(n):
        probe.zero_grad(set_to_none=True)
        loss(probe, {k: v[i : i + 1] for k, v in rows.items()}).backward()
        for name, p in params.items():
            single[name].append(None if p.grad is None else p.grad.detach().clone())
    unused: dict[str, str] = {}
    wrong: dict[str, str] = {}
    for name, sample in samples.items():
        module, kind = owner[name]
        grads = single[name]
        if sample is None and all(g is None for g in grads):
            unused[module] = f"{kind}: not reached by the forward pass"
        elif sample is None or not isinstance(sample, torch.Tensor):
            wrong.setdefault(kind, "no per-sample gradient")
        elif sample.shape[0] != n:
            wrong.setdefault(kind, f"per-sample gradients for {sample.shape[0]} rows, not {n}")
        elif not all(_close(sample[i], g) for i, g in enumerate(grads)):
            wrong.setdefault(kind, "per-sample gradients differ from each row's own")
    return unused, [f"{kind} ({why})" for kind, why in sorted(wrong.items())]


def _culprit(exc: BaseException, probe: nn.Module) -> str:
    """The type of the innermost layer of `probe` holding parameters that the failure went
    through (Opacus's hooks name it), or "a layer" if none shows in the traceback."""
    holders = {id(m) for m in probe.modules() if any(True for _ in m.parameters(recurse=False))}
    found = "a layer"
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, nn.Module) and id(value) in holders:
                found = type(value).__name__
        tb = tb.tb_next
    return found


def _deterministic(model: nn.Module) -> None:
    """Dropout off (eval), but the model itself and its parameter-holding layers in training
    mode: Opacus wraps only a training model, and records only training layers."""
    model.eval()
    model.training = True
    for module in model.modules():
        if any(True for _ in module.parameters(recurse=False)):
            module.train()


def _owners(model: nn.Module) -> dict[str, tuple[str, str]]:
    """Parameter name -> (the module holding it, that module's type name)."""
    out = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            out[full] = (module_name, type(module).__name__)
    return out


def _close(sample: torch.Tensor, single: torch.Tensor | None) -> bool:
    reference = torch.zeros_like(sample) if single is None else single
    error = float((sample - reference).norm())
    return error <= TOLERANCE * float(reference.norm()) + 1e-6
