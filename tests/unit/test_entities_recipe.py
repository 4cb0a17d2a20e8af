"""`sluice train --task extract-entities` below the queue: span and BIO rows read into the
spans the model learns, word pieces labelled so that the pipeline's `simple` aggregation
gives the spans back, seqeval-style metrics checked against hand counts and against the
transformers pipeline, and bad data refused at submit naming its rows."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from producers.model_refs import ModelRef
from producers.training import build_spec
from schemas import entity_spans as es
from schemas.errors import TrainingError
from schemas.media_refs import MediaLimits
from schemas.settings import Settings
from schemas.training import TrainSpec
from tests.conftest import DEMO_MODELS
from workers.training.recipes.entities import EntitiesRecipe
from workers.training.recipes.entity_tokens import IGNORE, piece_labels
from workers.training.recipes.span_metrics import span_metrics
from workers.training.scratch_entities import entity_sentences, pipeline_spans

TAGGER = "tiny-entities"


@pytest.fixture(scope="module")
def tagger_dir() -> Path:
    from ops.demo_model_cache import build_all

    build_all(DEMO_MODELS, [TAGGER])
    return DEMO_MODELS / TAGGER


def span_rows(n: int, seed: int = 3) -> list[dict[str, Any]]:
    return [
        {"text": s.text, "spans": [{"start": a, "end": b, "label": k} for a, b, k in s.spans]}
        for s in entity_sentences(n, seed, "mixed")
    ]


def jsonl(tmp_path: Path, rows: list[dict[str, Any]], name: str = "data.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return str(path)


def spec_of(tmp_path: Path, data: str, base: Path | None, **options: Any) -> TrainSpec:
    def resolve(ref: str, task: str) -> ModelRef:
        return ModelRef(name=ref, path=Path(ref), version="v")

    return build_spec(
        Settings(data_dir=tmp_path),
        resolve,
        task="extract-entities",
        name="tagger",
        data=data,
        label_column=options.pop("label_column", "spans"),
        base=str(base) if base else None,
        **options,
    )


def refused(tmp_path: Path, rows: list[dict[str, Any]], **options: Any) -> str:
    with pytest.raises(TrainingError) as caught:
        spec_of(tmp_path, jsonl(tmp_path, rows), options.pop("base", Path("/m")), **options)
    return str(caught.value)


# -- reading annotations ----------------------------------------------------------------------


def test_bio_tokens_become_a_text_with_spans_and_an_i_after_o_begins_an_entity() -> None:
    tokens = ["Ada", "Lovelace", "met", "Alan", "in", "New", "York", "."]
    tags = ["B-PER", "I-PER", "O", "I-PER", "O", "B-LOC", "I-LOC", "O"]
    text, spans = es.from_bio(tokens, tags)
    assert text == "Ada Lovelace met Alan in New York ."
    assert [text[s:e] + "/" + k for s, e, k in spans] == [
        "Ada Lovelace/PER",
        "Alan/PER",
        "New York/LOC",
    ]
    # B- after B- of the same type: two entities; I- of another type: a new one
    _, spans = es.from_bio(["a", "b", "c"], ["B-X", "B-X", "I-Y"])
    assert spans == [(0, 1, "X"), (2, 3, "X"), (4, 5, "Y")]
    # Chinese tokens are joined without spaces, as the text is written
    text, spans = es.from_bio(
        ["张", "伟", "在", "北", "京"], ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]
    )
    assert (text, spans) == ("张伟在北京", [(0, 2, "PER"), (3, 5, "LOC")])


def test_spans_are_checked_against_their_text_and_trimmed() -> None:
    text = "Call Ada Lovelace now"
    assert es.from_spans(text, [{"start": 4, "end": 17, "label": "PER"}]) == (
        text,
        [(5, 17, "PER")],
    )
    assert es.from_spans(text, json.dumps([])) == (text, [])  # a CSV cell, no entity
    assert es.shape_of("[1, 2]", "[]") == es.shape_of("[1, 2]", []) == "spans"  # a text
    for spans, said in [
        ([{"start": 5, "end": 30, "label": "PER"}], "needs 0 <= start < end <= 21"),
        ([{"start": 8, "end": 5, "label": "PER"}], "needs 0 <= start < end"),
        ([{"start": 5, "end": 8, "label": ""}], "label must be a non-empty name"),
        ([{"start": True, "end": 8, "label": "P"}], "start and end must be whole numbers"),
        ([{"start": 5, "end": 8, "label": "P", "text": "Ada "}], "text[5:8] is 'Ada', not 'Ada '"),
        (
            [{"start": 5, "end": 17, "label": "PER"}, {"start": 9, "end": 17, "label": "X"}],
            "spans 5-17 (PER) and 9-17 (X) overlap",
        ),
        ([{"start": 4, "end": 5, "label": "P"}], "covers only whitespace"),
    ]:
        with pytest.raises(ValueError, match=None) as caught:
            es.from_spans(text, spans)
        assert said in str(caught.value)


def test_word_pieces_are_labelled_so_the_simple_aggregation_gives_the_span_back(
    tagger_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tagger_dir)
    text = "Write to ada.lovelace@example.com today"
    spans = [(9, 33, "EMAIL")]
    labels = ["O", "B-EMAIL", "I-EMAIL"]
    enc = tokenizer(text, return_offsets_mapping=True)
    ids = piece_labels(enc["offset_mapping"], spans, {k: i for i, k in enumerate(labels)})
    assert ids[0] == ids[-1] == IGNORE  # [CLS], [SEP]
    tagged = [labels[i] for i in ids[1:-1]]
    inside = [o for o, t in zip(enc["offset_mapping"][1:-1], tagged, strict=True) if t != "O"]
    assert len(inside) > 3 and tagged.count("B-EMAIL") == 1  # many pieces, one entity
    kept = [(t, o) for t, o in zip(tagged, enc["offset_mapping"][1:-1], strict=True)]
    assert es.group_tags([t for t, _ in kept], [o for _, o in kept]) == spans


# -- metrics ----------------------------------------------------------------------------------


def test_entity_level_scores_count_exact_span_and_type_matches_as_seqeval_does() -> None:
    gold = [[(0, 3, "PER"), (10, 15, "LOC")], [(0, 4, "PER")], []]
    predicted = [[(0, 3, "PER"), (10, 14, "LOC")], [(0, 4, "LOC")], [(2, 5, "PER")]]
    m = span_metrics(gold, predicted, ["PER", "LOC"])
    # 1 right of 4 predicted, of 3 gold: P 1/4, R 1/3, F1 2PR/(P+R) = 2/7
    assert m["heldout_precision"] == pytest.approx(0.25)
    assert m["heldout_recall"] == pytest.approx(1 / 3)
    assert m["heldout_f1"] == pytest.approx(2 / 7)
    # PER: 1 right of 2 predicted, 2 gold; LOC: 0 right of 2 predicted, 1 gold
    assert (m["per_type.PER.precision"], m["per_type.PER.recall"]) == (0.5, 0.5)
    assert m["per_type.PER.f1"] == 0.5 and m["per_type.PER.support"] == 2
    assert (m["per_type.LOC.f1"], m["per_type.LOC.support"]) == (0.0, 1)
    assert span_metrics([[]], [[]], ["PER"])["heldout_f1"] == 0.0  # nothing to find


def test_held_out_scores_are_those_of_the_transformers_pipeline_on_the_same_texts(
    tagger_dir: Path,
) -> None:
    from transformers import pipeline

    rows = span_rows(40, seed=11)
    spec = TrainSpec(
        name="t",
        task="extract-entities",
        target="spans",
        data={"file": "x"},
        label_column="spans",
        labels=["EMAIL", "ORG", "PERSON", "PHONE", "PLACE"],
        annotation="spans",
        base=str(tagger_dir),
        holdout_fraction=0.5,
    )
    recipe = EntitiesRecipe(spec)
    prepared = recipe.prepare(spec, rows, MediaLimits())
    assert prepared.meta["head"].startswith("kept")
    model = recipe.build(spec, prepared.meta)
    heldout = {k: torch.as_tensor(v) for k, v in prepared.heldout.items()}
    ours = recipe.evaluate(model, heldout, prepared.meta)
    tagger = pipeline("token-classification", model=str(tagger_dir), aggregation_strategy="simple")
    found = [pipeline_spans(tagger(rows[i]["text"])) for i in prepared.meta["heldout_rows"]]
    kinds = es.kinds_of(prepared.meta["labels"])
    theirs = span_metrics(prepared.meta["heldout_spans"], found, kinds)
    assert len(found) == 20 and sum(len(f) for f in found) > 30
    assert {k: v for k, v in ours.items() if k in theirs} == pytest.approx(theirs, abs=1e-9)
    assert ours["heldout_f1"] > 0.9  # the demo tagger on sentences it never saw


# -- at submit --------------------------------------------------------------------------------


def test_a_request_reads_its_shape_and_entity_types(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, jsonl(tmp_path, span_rows(20)), Path("/m"))
    assert (spec.annotation, spec.target, spec.is_tagger) == ("spans", "spans", True)
    assert spec.labels == ["EMAIL", "ORG", "PERSON", "PHONE", "PLACE"]  # sorted
    assert spec.input_columns == ["text"] and not spec.is_classifier
    # --labels keeps the types it lists, in its order
    spec = spec_of(tmp_path, jsonl(tmp_path, span_rows(20)), Path("/m"), labels=["PLACE", "EMAIL"])
    assert spec.labels == ["PLACE", "EMAIL"]
    bio = [
        {"tokens": ["Ada", "works", "at", "Acme"], "tags": ["B-PER", "O", "O", "B-ORG"]},
        {"tokens": ["Nothing", "here"], "tags": ["O", "O"]},
    ]
    spec = spec_of(
        tmp_path, jsonl(tmp_path, bio), Path("/m"), text_column="tokens", label_column="tags"
    )
    assert (spec.annotation, spec.labels) == ("bio", ["ORG", "PER"])


def test_a_csv_holds_spans_or_tokens_as_json_cells(tmp_path: Path) -> None:
    import csv

    path = tmp_path / "spans.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "spans"])
        for row in span_rows(10):
            writer.writerow([row["text"], json.dumps(row["spans"], ensure_ascii=False)])
    spec = spec_of(tmp_path, str(path), Path("/m"))
    assert (spec.annotation, spec.labels) == ("spans", ["EMAIL", "ORG", "PERSON", "PHONE", "PLACE"])


def test_bio_rows_train_on_the_same_pieces_as_the_spans_of_their_text(tagger_dir: Path) -> None:
    tokens = ["Ada", "Lovelace", "works", "for", "Acme", "Corp", "in", "北", "京", "。"]
    tags = ["B-PERSON", "I-PERSON", "O", "O", "B-ORG", "I-ORG", "O", "B-PLACE", "I-PLACE", "O"]
    text = "Ada Lovelace works for Acme Corp in 北京。"
    as_spans = [
        {"start": 0, "end": 12, "label": "PERSON"},
        {"start": 23, "end": 32, "label": "ORG"},
    ]
    as_spans.append({"start": 36, "end": 38, "label": "PLACE"})
    arrays = []
    shapes: list[tuple[str, dict[str, Any]]] = [
        ("bio", {"text": tokens, "spans": tags}),
        ("spans", {"text": text, "spans": as_spans}),
    ]
    for annotation, row in shapes:
        spec = TrainSpec(
            name="t",
            task="extract-entities",
            target="spans",
            data={"file": "x"},
            label_column="spans",
            labels=["ORG", "PERSON", "PLACE"],
            annotation=annotation,
            base=str(tagger_dir),
            holdout_fraction=0.5,
        )
        prepared = EntitiesRecipe(spec).prepare(spec, [row, row], MediaLimits())
        arrays.append(prepared.train)
    assert arrays[0].keys() == arrays[1].keys()
    assert all((arrays[0][k] == arrays[1][k]).all() for k in arrays[0])
    labels = [prepared.meta["labels"][i] for i in arrays[1]["labels"][0] if i != IGNORE]
    assert labels.count("B-PERSON") == labels.count("B-ORG") == labels.count("B-PLACE") == 1
    assert labels[-2:] == ["I-PLACE", "O"]  # 京, 。


def test_bad_rows_are_refused_at_submit_naming_them(tmp_path: Path) -> None:
    rows = span_rows(8)
    rows[2]["spans"] = [{"start": 0, "end": 999, "label": "PERSON"}]
    rows[5]["spans"] = "PERSON"
    message = refused(tmp_path, rows)
    assert message.startswith("rows that are neither a text in 'text' with a list of spans")
    assert message.endswith(": row 6")
    rows[5]["spans"] = []
    message = refused(tmp_path, rows)
    assert message.startswith("rows whose spans cannot be read: row 3: ")
    assert "needs 0 <= start < end" in message
    mixed = [*span_rows(4), {"text": ["Ada"], "spans": ["B-PER"]}, *span_rows(2, seed=4)]
    assert refused(tmp_path, mixed) == (
        "rows mix two shapes: most hold a text and a list of spans, but rows 5 hold a list of "
        "tokens and a list of BIO tags; give every row the same shape"
    )
    bio = [{"text": ["Ada", "Lovelace"], "spans": ["B-PER"]}, {"text": ["x"], "spans": ["S-X"]}]
    assert refused(tmp_path, bio) == (
        "rows whose tokens and tags cannot be read: row 1: 2 tokens but 1 tags; "
        "row 2: tag 0: tag 'S-X' is not O, B-TYPE or I-TYPE"
    )


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"labels": ["PERSON", "MONEY"]}, "entity types in --labels that no row has (the model "),
        ({"labels": ["B-PERSON"]}, "--labels lists entity types (PERSON), not BIO tags"),
        ({"train_encoder": True}, "--train-encoder is for classifiers' heads"),
        ({"label_column": "text"}, "--label-column 'text' is also the input"),
    ],
)
def test_requests_a_tagger_cannot_train_are_refused(
    tmp_path: Path, options: dict[str, Any], said: str
) -> None:
    assert said in refused(tmp_path, span_rows(10), **options)


def test_data_without_any_entity_or_too_few_rows_is_refused(tmp_path: Path) -> None:
    none = [{"text": "nothing here", "spans": []}, {"text": "nor here", "spans": []}]
    assert refused(tmp_path, none) == "no row of 'spans' holds an entity: nothing to learn"
    assert "1 rows are too few to train on and hold out" in refused(tmp_path, span_rows(1))


# -- differential privacy ---------------------------------------------------------------------


def test_dp_sgd_freezes_the_tables_opacus_cannot_train_before_the_run(
    tagger_dir: Path,
) -> None:
    spec = TrainSpec(
        name="t",
        task="extract-entities",
        target="spans",
        data={"file": "x"},
        label_column="spans",
        labels=["PERSON"],
        annotation="spans",
        base=str(tagger_dir),
        dp={"epsilon": 8, "delta": 1e-5},
    )
    prepared = EntitiesRecipe(spec).prepare(spec, span_rows(12), MediaLimits())
    assert prepared.meta["labels"] == ["O", "B-PERSON", "I-PERSON"]
    assert prepared.meta["head"].startswith("new: the base tags EMAIL, PHONE, PERSON")
    # the embedding tables other than the tokens' (positions, token types) stay as they were
    # (recipes/dp_layers.py); every other layer passed Opacus's check against one backward
    # pass per row, so DP is not refused
    assert prepared.meta["dp_frozen"] == {
        name: "RoFormerSinusoidalPositionalEmbedding: looked up without a batch dimension"
        if "positions" in name
        else "Embedding: looked up without a batch dimension"
        for name in (
            "roformer.embeddings.token_type_embeddings",
            "roformer.encoder.embed_positions",
        )
    }
