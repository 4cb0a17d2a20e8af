"""`sluice train --task extract-entities` as a user runs it, on the real stack: the queue
`sluice.train` -> Celery worker -> Ray Train -> registry. The demo tagger (tiny-entities,
five entity types) is fine-tuned on synthetic sentences annotated with character spans,
keeping two types (--labels PERSON,EMAIL): a new head whose held-out entity-level scores are
recorded on the version, and which transformers' token-classification pipeline loads and
runs on sentences it never saw."""

import json
from pathlib import Path
from typing import Any

import pytest

from producers import Client
from tests.conftest import DEMO_MODELS
from tests.integration.conftest import sluice
from workers.training.recipes.span_metrics import span_metrics
from workers.training.scratch_entities import entity_sentences, pipeline_spans

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
KEPT = ("PERSON", "EMAIL")
FRESH = 20250611  # a seed no training or held-out sentence of this test came from


@pytest.fixture(scope="module")
def tagger_dir() -> Path:
    from ops.demo_model_cache import build_all

    build_all(DEMO_MODELS, ["tiny-entities"])
    return DEMO_MODELS / "tiny-entities"


def spans_file(path: Path, n: int, seed: int) -> str:
    rows = [
        {"text": s.text, "spans": [{"start": a, "end": b, "label": k} for a, b, k in s.spans]}
        for s in entity_sentences(n, seed, "mixed", split="train")
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return str(path)


def test_a_tagger_fine_tuned_on_spans_is_registered_with_its_scores_and_finds_entities(
    client: Client, env: dict[str, str], start_worker: Any, tagger_dir: Path, tmp_path: Path
) -> None:
    start_worker()
    done = sluice(
        env,
        "train",
        "--task=extract-entities",
        "--name=people-and-mail",
        f"--data={spans_file(tmp_path / 'spans.jsonl', 300, seed=7)}",
        "--label-column=spans",
        f"--labels={','.join(KEPT)}",
        f"--base={tagger_dir}",
        "--epochs=4",
        "--batch-size=16",
        "--learning-rate=2e-3",
        "--wait",
        "--json",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["status"] == "succeeded" and out["model"]["ref"] == "people-and-mail@1"
    version = client.registry.get("people-and-mail", "latest")
    metrics = version.metrics
    assert out["progress"]["metric"] == "heldout_f1"
    assert metrics["n_heldout"] == 60 and metrics["n_train"] == 240
    # entity-level, exact span and type: overall and per kept type, nothing of the others
    assert metrics["heldout_f1"] >= 0.9
    for kind in KEPT:
        assert {f"per_type.{kind}.{m}" for m in ("precision", "recall", "f1", "support")} <= set(
            metrics
        )
        assert metrics[f"per_type.{kind}.support"] > 10
        assert metrics[f"per_type.{kind}.f1"] >= 0.9
    assert not any("PHONE" in k or "PLACE" in k for k in metrics)

    saved = Path(version.uri)
    config = json.loads((saved / "config.json").read_text())
    assert config["id2label"] == {
        "0": "O",
        "1": "B-PERSON",
        "2": "I-PERSON",
        "3": "B-EMAIL",
        "4": "I-EMAIL",
    }
    assert config["sluice_trained_on"]["head"].startswith("new: the base tags EMAIL, PHONE")
    assert config["sluice_trained_on"]["annotation"] == "spans"

    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(saved), aggregation_strategy="simple")
    for text, wanted in [
        (
            "Contact Ada Lovelace at ada@example.org or +44 20 7946 0000 in London at Acme Corp.",
            {("Ada Lovelace", "PERSON"), ("ada@example.org", "EMAIL")},
        ),
        (
            "请联系王芳，电话 138 0000 1234，邮箱 wangfang@example.cn，地址北京，公司华为。",
            {("王芳", "PERSON"), ("wangfang@example.cn", "EMAIL")},
        ),
    ]:  # the phone, the place and the company are no longer entities
        assert {(text[s:e], k) for s, e, k in pipeline_spans(tagger(text))} == wanted
    # sentences with held-out names: the kept types found, phones and places no longer
    fresh = entity_sentences(40, FRESH, "mixed", split="heldout")
    gold = [[s for s in x.spans if s[2] in KEPT] for x in fresh]
    predicted = [pipeline_spans(tagger(x.text)) for x in fresh]
    assert span_metrics(gold, predicted, KEPT)["heldout_f1"] >= 0.9
    assert all(s[2] in KEPT for p in predicted for s in p)
