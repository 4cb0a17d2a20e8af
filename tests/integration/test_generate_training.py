"""`sluice train --task generate` on the real stack: the queue `sluice.train` -> Celery worker
-> Ray Train -> registry. The demo's decoder-only speller (tiny-spell-causal: "Spell: 4 0 7"
-> "four zero seven", a chat template in its tokenizer) is fine-tuned to spell the digits
backwards; DP-SGD and its refusal run on tiny random generators (tests/generation_bases.py)."""

import json
import random
from itertools import product
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from producers import Client
from schemas.errors import TrainingError
from tests.generation_bases import build, word_rows
from workers.training.scratch_generators import spell_digits, spell_prompt

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generator-bases")
    return {kind: build(kind, root / kind) for kind in ("t5", "mixtral")}


def pairs_file(path: Path, rows: list[dict[str, str]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def backwards(n: int, seed: int) -> list[dict[str, str]]:
    """`n` rows "Spell: 4 0 7" -> "seven zero four" (one to three digits), no input twice:
    a held-out row is never one trained on."""
    rng = random.Random(seed)
    rows: dict[str, str] = {}
    while len(rows) < n:
        digits = " ".join(str(rng.randrange(10)) for _ in range(rng.randint(1, 3)))
        rows.setdefault(spell_prompt(digits), spell_digits(" ".join(reversed(digits.split()))))
    return [{"text": text, "target": target} for text, target in rows.items()]


def chat_generate(model_dir: Path | str, texts: list[str]) -> list[str]:
    """Greedy generations of a saved decoder-only model, prompted as the generate handler
    prompts it (the chat template from the saved tokenizer, left padding)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
        )
        for t in texts
    ]
    batch = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


def test_the_demo_speller_learns_to_spell_backwards_and_saves_what_inference_loads(
    client: Client, start_worker: Any, demo_models: Path, tmp_path: Path
) -> None:
    base = demo_models / "tiny-spell-causal"
    rows = backwards(300, seed=1)
    start_worker()
    run_id = client.submit_training(
        task="generate",
        name="backwards",
        data=pairs_file(tmp_path / "pairs.jsonl", rows),
        label_column="target",
        base=str(base),
        # 14 epochs reached 0.95 until 2026-11-30; since then 0.90 here, on this release's
        # code and the previous one alike (whatever changed is outside the repository: an
        # unpinned dependency); 24 epochs pass every check below
        epochs=24,
        batch_size=16,
        learning_rate=3e-3,
    )
    run = client.wait_training(run_id, timeout=300)
    assert run.status == "succeeded", run.error
    version = client.registry.get("backwards", "latest")
    # 60 held-out rows, never trained on: spelt backwards after the fine-tune, not before
    first = run.progress["history"][0]
    assert run.progress["metric"] == "heldout_exact_match"
    assert version.metrics["n_heldout"] == 60 and version.metrics["n_train"] == 240
    assert version.metrics["heldout_exact_match"] >= 0.95 > first["heldout_exact_match"] + 0.5
    assert version.metrics["heldout_loss"] < first["heldout_loss"] / 10
    # the directory loads with AutoModelForCausalLM and its own tokenizer (chat template kept)
    saved = Path(version.uri)
    assert {"config.json", "generation_config.json", "model.safetensors"} <= {
        p.name for p in saved.iterdir()
    }
    config = json.loads((saved / "config.json").read_text())
    assert config["sluice_trained_on"]["target_column"] == "target"
    seen = {r["text"] for r in rows}
    never = [
        spell_prompt(" ".join(d))
        for n in (2, 3)
        for d in product("0123456789", repeat=n)
        if d != d[::-1] and spell_prompt(" ".join(d)) not in seen
    ]
    unseen = never[:: len(never) // 8][:8]  # eight inputs the model never met
    digits = [t.removeprefix("Spell: ") for t in unseen]
    assert chat_generate(base, unseen) == [spell_digits(d) for d in digits]  # forwards
    wanted = [spell_digits(" ".join(reversed(d.split()))) for d in digits]
    assert chat_generate(saved, unseen) == wanted


def test_dp_sgd_fine_tunes_a_t5_and_refuses_a_mixture_of_experts_before_training(
    client: Client, start_worker: Any, bases: dict[str, Path], tmp_path: Path
) -> None:
    start_worker()
    private: dict[str, Any] = {"label_column": "target", "dp_epsilon": 8.0, "dp_delta": 1e-5}
    run_id = client.submit_training(
        task="generate",
        name="reverser-private",
        data=pairs_file(tmp_path / "pairs.jsonl", word_rows(200, seed=2)),
        base=str(bases["t5"]),
        epochs=3,
        batch_size=32,
        learning_rate=3e-3,
        **private,
    )
    refused_id = client.submit_training(
        task="generate",
        name="experts-private",
        data=pairs_file(tmp_path / "few.jsonl", word_rows(40, seed=3)),
        base=str(bases["mixtral"]),
        epochs=2,
        **private,
    )
    # Mixtral's routed experts: Opacus has no per-sample gradients for them; the run fails
    # with the reason before an epoch is trained, and is not retried
    refused = client.wait_training(refused_id, timeout=120)
    assert refused.status == "failed" and refused.attempts == 1 and refused.error is not None
    assert refused.error.startswith(
        "--dp-epsilon: Opacus cannot compute exact per-sample gradients"
    )
    assert "MixtralExperts" in refused.error and "Train it without --dp-epsilon" in refused.error
    assert "epoch" not in refused.progress
    assert client.registry.list("experts-private") == []

    run = client.wait_training(run_id, timeout=300)
    assert run.status == "succeeded", run.error
    version = client.registry.get("reverser-private", "latest")
    assert version.dp is not None and 0 < version.dp["epsilon"] <= 8.0 + 1e-6
    assert version.dp["delta"] == 1e-5 and version.dp["noise_multiplier"] > 0.3
    assert run.progress["history"][-1]["epsilon"] == pytest.approx(version.dp["epsilon"])
    assert all(h["loss"] is None for h in run.progress["history"])  # nothing un-noised shown
    assert 0 <= version.metrics["heldout_exact_match"] <= 1 and version.metrics["heldout_loss"] > 0
    # Opacus has no per-sample gradients for T5's relative attention bias (looked up with no
    # batch dimension): it stayed as it was, and the saved config says so; every other
    # weight was trained
    trained_on = json.loads((Path(version.uri) / "config.json").read_text())["sluice_trained_on"]
    assert sorted(trained_on["dp_frozen"]) == [
        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias",
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias",
    ]
    before = load_file(str(bases["t5"] / "model.safetensors"))
    after = load_file(str(Path(version.uri) / "model.safetensors"))
    unchanged = {name for name, weights in after.items() if weights.equal(before[name])}
    assert unchanged == {f"{module}.weight" for module in trained_on["dp_frozen"]}


def test_generate_requests_without_a_base_or_targets_are_refused_at_submit(
    client: Client, bases: dict[str, Path], tmp_path: Path
) -> None:
    rows = word_rows(10, seed=4)
    data = pairs_file(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(TrainingError, match="cannot train one from nothing: give --base"):
        client.submit_training(task="generate", name="g", data=data, label_column="target")
    rows[3]["target"], rows[7]["target"] = "", " "
    data = pairs_file(tmp_path / "holes.jsonl", rows)
    with pytest.raises(TrainingError, match=r"no target text in 'target': row 4; row 8$"):
        client.submit_training(
            task="generate", name="g", data=data, label_column="target", base=str(bases["t5"])
        )
    assert client.runs.list() == []
