"""The worker's redaction (workers/pii_stage.py) with the entity model stood in by a function
that finds fixed names: what the task's model is handed, and what a row stores."""

from schemas.jobs import Explanation, Item, Outcome
from schemas.redaction import PiiModel, Redaction, RedactMode
from schemas.states import ItemStatus
from storage import pii
from workers.pii_stage import PiiStage

NAMES = {"Grace Hopper": "PERSON", "Berlin": "PLACE", "Initech": "ORG", "王伟": "PERSON"}
SECRET = b"s" * 32


def fake_entity_model(texts: list[str]) -> list[list[pii.Span]]:
    """What a tagger that knows NAMES would find."""
    found = []
    for text in texts:
        spans = []
        for name, kind in NAMES.items():
            at = text.find(name)
            while at >= 0:
                spans.append(pii.Span(kind, at, at + len(name), 0.99, "model"))
                at = text.find(name, at + len(name))
        found.append(spans)
    return found


def stage(mode: RedactMode, paths: tuple[str, ...] = ()) -> PiiStage:
    redaction = Redaction(
        mode=mode,
        types=["EMAIL", "CN_MOBILE", "PERSON", "PLACE", "ORG"],
        model=PiiModel(name="tagger", version="v1", path="/models/tagger"),
    )
    return PiiStage(redaction, SECRET, paths, fake_entity_model)


def producer_masked(key: str, text: str) -> Item:
    """An item as the producer stores it under mask: its pattern types already replaced."""
    spans = pii.find_patterns(text, ["EMAIL", "CN_MOBILE"])
    new, found = pii.redact(text, spans, "mask", SECRET)
    return Item(key=key, text=new, redactions=[{**f, "field": "text"} for f in found] or None)


def test_names_are_masked_before_the_model_and_the_stored_item_is_replaced():
    items = [
        producer_masked("en", "Grace Hopper (grace@example.com) moved to Berlin for Initech."),
        producer_masked("zh", "王伟的手机是13812345678。"),
        Item(key="bad", text="Grace Hopper " * 500, invalid="too long"),
    ]
    s = stage(RedactMode.MASK)
    out = s.inputs(items, ready={"en", "zh"})
    assert out[0].text == "<PERSON> (<EMAIL>) moved to <PLACE> for <ORG>."
    assert out[1].text == "<PERSON>的手机是<CN_MOBILE>。"
    assert out[2].text is None  # an invalid item keeps no text under mask
    assert s.replaced
    for item in out[:2]:  # every finding, the producer's shifted, points at its replacement
        for f in item.redactions or []:
            assert item.text[f["start"] : f["end"]] == f"<{f['type']}>"
    assert sorted(f["type"] for f in out[0].redactions or []) == [
        "EMAIL", "ORG", "PERSON", "PLACE",
    ]  # fmt: skip


def test_detect_records_names_and_changes_nothing():
    text = "Grace Hopper lives in Berlin."
    s = stage(RedactMode.DETECT)
    (out,) = s.inputs([Item(key="a", text=text)], ready={"a"})
    assert out.text == text and not s.replaced
    assert {text[f["start"] : f["end"]] for f in out.redactions or []} == {"Grace Hopper", "Berlin"}


def test_texts_a_model_makes_are_redacted_and_recorded():
    s = stage(RedactMode.MASK, ("text",))
    items = [Item(key="a", path="a.wav"), Item(key="b", path="b.wav")]
    outcomes = [
        Outcome(key="a", status=ItemStatus.OK, output={"text": "call 13812345678", "seconds": 2}),
        Outcome(key="b", status=ItemStatus.ERROR, error="failed on Grace Hopper's audio"),
    ]
    a, b = s.outputs(outcomes, items)
    assert a.output == {"text": "call <CN_MOBILE>", "seconds": 2}
    assert a.redactions == [
        {"type": "CN_MOBILE", "start": 5, "end": 16, "by": "pattern", "field": "output.text"}
    ]
    assert b.error == "failed on <PERSON>'s audio"
    assert outcomes[0].output == {"text": "call 13812345678", "seconds": 2}  # not mutated


def test_hash_tokens_of_names_are_keyed_by_the_tenant_secret():
    s = stage(RedactMode.HASH)
    (out,) = s.inputs([Item(key="a", text="Grace Hopper and Grace Hopper")], ready={"a"})
    token = pii.token(SECRET, "Grace Hopper")
    assert out.text == f"<PERSON:{token}> and <PERSON:{token}>"


def test_explanations_of_made_text_are_redacted_too():
    s = stage(RedactMode.MASK, ("text",))
    outcome = Outcome(
        key="a",
        status=ItemStatus.OK,
        output={"text": "Grace Hopper: 13812345678"},
        explanation=Explanation(
            method="lig",
            target="Grace Hopper: 13812345678",
            tokens=["Write", "to"],
            attributions=[0.1, 0.2],
            detail={"answer": "13812345678", "scores": [0.5]},
        ),
    )
    (out,) = s.outputs([outcome], [Item(key="a", text="Write to")])
    assert out.output == {"text": "<PERSON>: <CN_MOBILE>"}
    assert out.explanation is not None
    assert out.explanation.target == "<PERSON>: <CN_MOBILE>"
    assert out.explanation.detail == {"answer": "<CN_MOBILE>", "scores": [0.5]}
    assert {f["field"] for f in out.redactions or []} == {
        "output.text", "explanation.target", "explanation.detail.answer",
    }  # fmt: skip


def test_a_value_cut_by_another_leaves_no_fragment():
    text = "Ask Grace Hopper13812345678 now"
    spans = [pii.Span("PERSON", 4, 17, 0.9, "model"), pii.Span("CN_MOBILE", 16, 27)]
    assert pii.redact(text, spans, "mask")[0] == "Ask <PERSON> now"
    prior = [{"type": "EMAIL", "start": 15, "end": 22, "by": "pattern"}]
    new, _ = pii.redact(
        "Write to Grace <EMAIL> now", [pii.Span("PERSON", 9, 22)], "mask", None, prior
    )
    assert new == "Write to <PERSON> <EMAIL> now" or "Grace" not in new


def test_a_generations_target_tokens_are_redacted_as_its_output_is():
    made = "Call Grace Hopper on 13812345678."
    pieces = ["Call", " Grace", " Hop", "per", " on", " 138", "123", "45678", ".", "<end>"]
    seen: list[str] = []

    def tagger(texts: list[str]) -> list[list[pii.Span]]:
        seen.extend(texts)
        return fake_entity_model(texts)

    outcome = Outcome(
        key="a",
        status=ItemStatus.OK,
        output={"text": made},
        explanation=Explanation(
            method="feature_ablation",
            target=made,
            tokens=["Who", "?"],
            attributions=[0.1, 0.2],
            detail={"target_tokens": pieces, "baseline": "each prompt token hidden"},
        ),
    )
    for mode, person, phone in [
        (RedactMode.MASK, "<PERSON>", "<CN_MOBILE>"),
        (RedactMode.HASH, f"<PERSON:{pii.token(SECRET, 'Grace Hopper')}>",
         f"<CN_MOBILE:{pii.token(SECRET, '13812345678')}>"),
    ]:  # fmt: skip
        s = PiiStage(stage(mode).redaction, SECRET, ("text",), tagger)
        (out,) = s.outputs([outcome], [Item(key="a", text="Who?")])
        assert out.output == {"text": f"Call {person} on {phone}."}
        assert out.explanation is not None and out.explanation.detail is not None
        assert out.explanation.detail["target_tokens"] == [
            "Call", f" {person}", "", "", " on", f" {phone}", "", "", ".", "<end>",
        ]  # fmt: skip
    assert not set(pieces) & set(seen)  # the pieces were never texts of their own to the model

    # pieces that do not spell a target that held a value are all blanked
    odd = outcome.model_copy(deep=True)
    assert odd.explanation is not None and odd.explanation.detail is not None
    odd.explanation.detail["target_tokens"] = ["Grace Hopper", "▁unplaceable", "<end>"]
    (out,) = stage(RedactMode.MASK, ("text",)).outputs([odd], [Item(key="a", text="Who?")])
    assert out.explanation is not None and out.explanation.detail is not None
    assert out.explanation.detail["target_tokens"] == ["", "", "<end>"]


def test_target_tokens_split_inside_characters_or_on_another_copy_leave_nothing():
    s = PiiStage(stage(RedactMode.MASK).redaction, SECRET, ("text",), fake_entity_model)

    def tokens_after(target: str, pieces: list[str]) -> list[str]:
        outcome = Outcome(
            key="a",
            status=ItemStatus.OK,
            output={"text": target},
            explanation=Explanation(method="m", target=target, detail={"target_tokens": pieces}),
        )
        (out,) = s.outputs([outcome], [Item(key="a", text="?")])
        assert out.explanation is not None and out.explanation.detail is not None
        return list(out.explanation.detail["target_tokens"])

    # byte-level pieces of 王 (two halves) then 伟: the name's pieces all go
    split = tokens_after(
        "王伟 met Grace Hopper.", ["\ufffd", "\ufffd", "伟", " met", " Grace", " Hop", "per", "."]
    )
    assert split == ["<PERSON>", "", "", " met", " <PERSON>", "", "", "."]
    # pieces that do not spell the target are never placed on a later, unflagged copy
    odd = tokens_after("é Grace Hopper, Grace Hop", ["\ufffd", " Grace", " Hop", "per"])
    assert odd == ["", "", "", ""]
    # a target without values keeps its pieces, placed or not
    assert tokens_after("all well", ["all", " w", "xyz"]) == ["all", " w", "xyz"]
