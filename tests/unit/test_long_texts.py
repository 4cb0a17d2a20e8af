"""Texts longer than the model's window (issue 18): under `truncate` every row says how much
was read; under `windows` all of it is, the windows pooled and explained as one text."""

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from producers.model_refs import resolve
from schemas.catalog import load_catalog
from schemas.jobs import Item
from schemas.states import ExplanationStatus
from tests.conftest import SAMPLES
from workers.handlers import handler_for

# Neutral filler: a garden committee's minutes, about neither billing nor praise.
FILLER = [
    "The committee met on Tuesday in the north building to review the garden schedule.",
    "Members discussed the order in which the flower beds along the river path are watered.",
    "The secretary read the minutes of the previous meeting and they were approved.",
    "A volunteer described the new tool shed and where the ladders are stored.",
    "The group agreed to meet again after the spring planting has been completed.",
]
ENDINGS = {
    "billing": "Finally, about money: my invoice charged me twice this month, the refund "
    "never arrived, and the billing statement shows a fee I never agreed to pay.",
    "praise": "Finally, thank you: the staff were wonderful, friendly and quick, the help "
    "was excellent, and I am delighted with the service, truly the best.",
}
WINDOW = 128  # the test classifier's positions: a 2,000-word text is ~20 of its windows


def long_text(ending: str, words: int = 2000) -> str:
    out: list[str] = []
    while sum(len(s.split()) for s in out) < words:
        out.append(FILLER[len(out) % len(FILLER)])
    return " ".join(out) + "\n\n" + ending


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> str:
    embed = load_catalog().get("embed")
    return str(resolve("all-MiniLM-L6-v2", embed, tmp_path_factory.mktemp("c")).path)


@pytest.fixture(scope="module")
def ending_classifier(minilm: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BERT (billing vs praise, 128 positions) trained here on windows like the test
    text's: filler alone is taught as undecided (half and half), filler with a billing or
    praise message in it as that label. So only what the ending says can decide."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    labels = ["billing", "praise"]
    rows = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()]
    messages = {
        label: [r["text"] for r in rows if r["topic"] == label and r["lang"] == "en"]
        for label in labels
    }
    rng = random.Random(0)
    texts, targets = [], []
    for n in range(600):
        filler = [rng.choice(FILLER) for _ in range(rng.randint(1, 9))]
        kind = n % 3
        if kind < 2:  # a message among filler: its label
            filler.insert(rng.randint(0, len(filler)), rng.choice(messages[labels[kind]]))
            targets.append([1.0, 0.0] if kind == 0 else [0.0, 1.0])
        else:
            targets.append([0.5, 0.5])
        texts.append(" ".join(filler))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=WINDOW,
        num_labels=2,
        id2label=dict(enumerate(labels)),
        label2id={k: i for i, k in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=WINDOW, return_tensors="pt")
    target = torch.tensor(targets)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(120):
        rows_at = torch.randperm(len(texts))[:64]
        logits = model(**{k: v[rows_at] for k, v in batch.items()}).logits
        loss = -(target[rows_at] * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
        loss.backward()
        optim.step()
        optim.zero_grad()
    model.eval()
    out = tmp_path_factory.mktemp("ending-classifier")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def handler(task: str, model: str | Path) -> Any:
    h = handler_for(load_catalog().get(task))
    h.setup(str(model), "cpu")
    return h


def predict(h: Any, texts: list[str], params: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    feats = [h.preprocess(Item(key=str(n), text=t), params) for n, t in enumerate(texts)]
    return feats, h.predict(feats)


def manual_windows(tokenizer: Any, text: str, length: int, stride: int) -> list[list[int]]:
    """The windows cut by hand: `length - 2` text tokens each between [CLS] and [SEP], each
    starting `stride` tokens before the previous one ended, the last reaching the end."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    room, at, out = length - 2, 0, []
    while True:
        out.append([tokenizer.cls_token_id, *ids[at : at + room], tokenizer.sep_token_id])
        if at + room >= len(ids):
            return out
        at += room - stride


def padded(tokenizer: Any, windows: list[list[int]]) -> dict[str, torch.Tensor]:
    return dict(tokenizer.pad({"input_ids": windows}, return_tensors="pt"))


def test_a_windowed_embedding_is_the_mean_of_its_windows_embeddings_computed_directly(
    minilm: str,
):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm, device="cpu")
    text = long_text(ENDINGS["billing"])
    windows = manual_windows(st.tokenizer, text, 256, 32)
    with torch.inference_mode():
        direct = st(padded(st.tokenizer, windows))["sentence_embedding"]  # normalised each
    mean = direct.mean(dim=0)
    expected = torch.nn.functional.normalize(mean, dim=0)

    _, (out,) = predict(handler("embed", minilm), [text], {"long_text": "windows"})
    got = torch.tensor(out["embedding"])
    assert out["windows"] == len(windows) == 10
    assert out["tokens_total"] == out["tokens_used"] == len(st.tokenizer(text)["input_ids"])
    assert out["truncated"] is False
    # the mean of the windows' embeddings, given at unit length like every embedding
    assert torch.allclose(got, expected, atol=2e-6)
    assert float(torch.nn.functional.cosine_similarity(got, mean, dim=0)) > 1 - 1e-6
    assert got.norm().item() == pytest.approx(1.0, abs=1e-5)


def test_truncate_reads_the_first_window_and_every_row_says_so(minilm: str):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm, device="cpu")
    text, short = long_text(ENDINGS["billing"]), "Where is my parcel?"
    _, (long_row, short_row) = predict(handler("embed", minilm), [text, short], {})
    total = len(st.tokenizer(text)["input_ids"])
    assert (long_row["truncated"], long_row["tokens_used"], long_row["tokens_total"]) == (
        True, 256, total,
    )  # fmt: skip
    assert "windows" not in long_row
    # what sentence-transformers itself reads: the first 256 tokens
    assert torch.allclose(
        torch.tensor(long_row["embedding"]), st.encode(text, convert_to_tensor=True), atol=2e-6
    )
    assert short_row["truncated"] is False
    assert (
        short_row["tokens_used"]
        == short_row["tokens_total"]
        == len(st.tokenizer(short)["input_ids"])
    )
    labels = {"labels": ["billing", "gardening"]}
    _, (zs,) = predict(handler("zero-shot-text", minilm), [text], labels)
    assert zs["truncated"] is True and zs["tokens_used"] == 256


def test_the_planted_final_paragraph_decides_under_windows_and_not_under_truncate(
    ending_classifier: Path,
):
    classify = handler("classify-text", ending_classifier)
    texts = [long_text(ENDINGS["billing"]), long_text(ENDINGS["praise"])]
    _, truncated = predict(classify, texts, {})
    # the first 128 tokens are the same filler: the same answer, whatever the ending says
    assert truncated[0]["scores"] == truncated[1]["scores"]
    assert all(r["truncated"] and r["tokens_used"] == WINDOW for r in truncated)
    _, windowed = predict(classify, texts, {"long_text": "windows", "window_pooling": "max"})
    assert [r["label"] for r in windowed] == ["billing", "praise"]
    assert all(r["score"] > 0.9 and r["windows"] >= 20 for r in windowed)


def test_window_pooling_mean_is_the_mean_of_the_windows_probabilities(ending_classifier: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ending_classifier)
    model = AutoModelForSequenceClassification.from_pretrained(ending_classifier).eval()
    text = long_text(ENDINGS["praise"])
    windows = manual_windows(tokenizer, text, WINDOW, 16)
    with torch.inference_mode():
        direct = torch.softmax(model(**padded(tokenizer, windows)).logits, dim=-1)
    classify = handler("classify-text", ending_classifier)
    for pooling, pooled in (("mean", direct.mean(0)), ("max", direct.max(0).values)):
        params = {"long_text": "windows", "window_pooling": pooling, "stride": 16}
        _, (row,) = predict(classify, [text], params)
        assert row["windows"] == len(windows)
        got = [row["scores"][label] for label in ("billing", "praise")]
        assert got == pytest.approx(pooled.tolist(), abs=1e-5)
    assert sum(row["scores"].values()) > 1.2  # max: each label's best window, not a distribution


def test_zero_shot_windows_pool_each_windows_label_probabilities(minilm: str):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm, device="cpu")
    labels = ["a billing complaint", "a garden committee's minutes"]
    text = long_text(ENDINGS["billing"])
    with torch.inference_mode():
        windows = st(padded(st.tokenizer, manual_windows(st.tokenizer, text, 256, 32)))
        label_vectors = st.encode(labels, convert_to_tensor=True)
    per_window = torch.softmax(windows["sentence_embedding"] @ label_vectors.T * 20.0, dim=-1)
    zero_shot = handler("zero-shot-text", minilm)
    params = {"labels": labels, "long_text": "windows", "window_pooling": "max"}
    _, (row,) = predict(zero_shot, [text], params)
    got = [row["scores"][label] for label in labels]
    assert got == pytest.approx(per_window.max(0).values.tolist(), abs=1e-4)


def words_of(tokenizer: Any, text: str) -> list[str]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans: dict[int, list[int]] = {}
    for (start, end), word in zip(enc["offset_mapping"], enc.word_ids(), strict=True):
        if word is not None:
            span = spans.setdefault(word, [start, end])
            span[1] = end
    return [text[a:b] for a, b in spans.values()]


def test_a_windowed_explanation_covers_the_whole_text_each_word_from_its_windows(
    ending_classifier: Path,
):
    from captum.attr import LayerIntegratedGradients

    classify = handler("classify-text", ending_classifier)
    text = long_text(ENDINGS["billing"], words=600)
    steps = 8
    for pooling in ("max", "mean"):
        params = {"long_text": "windows", "window_pooling": pooling}
        feats, outputs = predict(classify, [text], params)
        (expl,) = classify.explain(feats, outputs, steps, 8)
        assert expl.status == ExplanationStatus.OK and expl.target == "billing"
        assert expl.tokens == words_of(classify.tokenizer, text)  # every word, in order
        # each window's attributions computed directly, added per word as pooling weighs them
        f = feats[0]
        probs = f.window_probs[:, 0]
        weights = (
            [1.0 if w == int(probs.argmax()) else 0.0 for w in range(len(f.windows))]
            if pooling == "max"
            else [1 / len(f.windows)] * len(f.windows)
        )
        expected: dict[int, float] = {}
        lig = LayerIntegratedGradients(
            lambda ids, mask: torch.softmax(
                classify.model(input_ids=ids, attention_mask=mask).logits, dim=-1
            ),
            classify.model.get_input_embeddings(),
        )
        for window, weight in zip(f.windows, weights, strict=True):
            ids = torch.tensor([window.input_ids])
            base = ids.clone()
            base[0, 1:-1] = classify.tokenizer.pad_token_id
            attr = lig.attribute(
                ids, base, additional_forward_args=(torch.ones_like(ids),), target=0, n_steps=steps
            ).sum(-1)[0]
            for pos, word in enumerate(window.word_ids):
                if word is not None:
                    expected[word] = expected.get(word, 0.0) + weight * float(attr[pos])
        want = [expected.get(w, 0.0) for w in sorted(expected)]
        assert expl.attributions == pytest.approx(want, abs=1e-5)
        ending_words = len(words_of(classify.tokenizer, ENDINGS["billing"]))
        if pooling == "max":  # the deciding window's words alone; it holds the ending
            assert any(abs(a) > 0 for a in expl.attributions[-ending_words:])
            assert all(a == 0 for a in expl.attributions[:ending_words])


def test_long_text_parameters_are_checked():
    from schemas.errors import SluiceError

    embed = load_catalog().get("embed")
    assert embed.check_params({})["long_text"] == "truncate"
    with pytest.raises(SluiceError, match="long_text"):
        embed.check_params({"long_text": "summarise"})
    with pytest.raises(SluiceError, match="stride"):
        embed.check_params({"long_text": "windows", "stride": -1})
    with pytest.raises(SluiceError, match="window_pooling"):
        load_catalog().get("classify-text").check_params({"window_pooling": "median"})
