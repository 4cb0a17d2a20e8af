"""Sluice's own tasks, one spec each. Adding a task is a spec here (or in another package; see
schemas/catalog.py) and a handler class under workers/handlers/."""

from typing import Annotated, Any

from pydantic import Field, StringConstraints, ValidationInfo, field_validator, model_validator

from schemas.generation_params import GenerateParams
from schemas.modalities import Modality
from schemas.reading_params import AnswerQuestionParams, ExtractEntitiesParams
from schemas.task_spec import (
    ExplainerSpec,
    ModelFiles,
    ModelKind,
    ModelNeeds,
    OutputShape,
    Target,
    TaskSpec,
    TrainingSupport,
)
from schemas.text_params import ClassifyTextParams, LongTextParams
from schemas.text_patterns import TRIMMED
from schemas.vision_params import DetectParams

HANDLERS = "workers.handlers"
MAX_LABELS = 100  # zero-shot defaults where no settings are given (SLUICE_ZERO_SHOT_MAX_*)
MAX_LABEL_CHARS = 200
RECIPES = "workers.training.recipes"
TOKEN_ATTRIBUTIONS = ExplainerSpec(
    "layer_integrated_gradients",
    note="LayerIntegratedGradients on the input word embeddings, merged to words",
)
RECORD_ATTRIBUTIONS = ExplainerSpec(
    "integrated_gradients", note="per-feature Integrated Gradients from the training mean"
)
NO_DP_MEDIA = (
    "its model family holds BatchNorm or weight-normalised convolutions, which "
    "Opacus cannot give per-sample gradients"
)


class ZeroShotParams(ClassifyTextParams):
    labels: list[str] = Field(..., description="the candidate labels, at least two")
    label_descriptions: dict[str, str] | None = Field(
        None, description="a longer description per label, compared instead of the label"
    )

    @classmethod
    def api_fields(cls, settings: Any) -> dict[str, tuple[Any, Any]]:
        """Over the API labels come trimmed (so unique means unique), within the caps."""
        longest = getattr(settings, "zero_shot_max_label_chars", MAX_LABEL_CHARS)
        label = Annotated[str, StringConstraints(max_length=longest, pattern=TRIMMED)]
        text = Annotated[str, StringConstraints(max_length=longest, pattern="^[^\\x00]*$")]
        most = getattr(settings, "zero_shot_max_labels", MAX_LABELS)
        return {
            "labels": (
                list[label],  # type: ignore[valid-type]
                Field(
                    ...,
                    min_length=2,
                    max_length=most,
                    json_schema_extra={"uniqueItems": True},
                    description="the candidate labels: at least two, each once, trimmed",
                ),
            ),
            "label_descriptions": (
                dict[str, text] | None,  # type: ignore[valid-type]
                Field(
                    None,
                    description="a longer description per label in `labels`, "
                    "compared instead of the label",
                ),
            ),
        }

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str], info: ValidationInfo) -> list[str]:
        settings = (info.context or {}).get("settings")
        most = getattr(settings, "zero_shot_max_labels", MAX_LABELS)
        longest = getattr(settings, "zero_shot_max_label_chars", MAX_LABEL_CHARS)
        labels = [label.strip() for label in value if label.strip()]
        if len(labels) < 2:
            raise ValueError("give at least two labels (--labels a,b,c)")
        if len(labels) > most:
            raise ValueError(f"{len(labels)} labels, over the cap of {most} "
                             "(SLUICE_ZERO_SHOT_MAX_LABELS)")  # fmt: skip
        if too_long := [label[:40] for label in labels if len(label) > longest]:
            raise ValueError(f"labels over {longest} characters "
                             f"(SLUICE_ZERO_SHOT_MAX_LABEL_CHARS): {too_long[:3]}")  # fmt: skip
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate labels in {labels}")
        return labels

    @field_validator("label_descriptions")
    @classmethod
    def _description_lengths(
        cls, value: dict[str, str] | None, info: ValidationInfo
    ) -> dict[str, str] | None:
        settings = (info.context or {}).get("settings")
        longest = getattr(settings, "zero_shot_max_label_chars", MAX_LABEL_CHARS)
        if too_long := [k[:40] for k, v in (value or {}).items() if len(v) > longest]:
            raise ValueError(
                f"descriptions over {longest} characters (SLUICE_ZERO_SHOT_MAX_LABEL_CHARS) "
                f"for labels {too_long[:3]}"
            )
        return value

    @model_validator(mode="after")
    def _descriptions(self) -> "ZeroShotParams":
        unknown = set(self.label_descriptions or {}) - set(self.labels)
        if unknown:
            raise ValueError(f"descriptions given for unknown labels: {sorted(unknown)}")
        return self


def _records_model(task: str) -> ModelNeeds:
    return ModelNeeds(
        kind=ModelKind.RECORDS_MLP,
        files=ModelFiles.NONE,
        description=f"a Sluice records model trained for {task} (`sluice train --task {task}`)",
    )


# Short texts run sorted by length within a chunk: 512 of them fill batches to ~0.95 of their
# tokens against ~0.90 at 256 (bench/embed_throughput.py, embed of 1,000 short messages: 267
# against 252 texts/s end to end)
TEXT_CHUNK = 512

BUILTIN_TASKS = (
    TaskSpec(
        "embed",
        Modality.TEXT,
        f"{HANDLERS}.text:EmbedHandler",
        "sentence embeddings (mean pooling, L2-normalised; a CLIP directory: its text tower)",
        OutputShape.EMBEDDING,
        params=LongTextParams,
        model=ModelNeeds(
            description="a text encoder directory with its tokenizer", uses_default_model=True
        ),
        chunk_size=TEXT_CHUNK,
    ),
    TaskSpec(
        "zero-shot-text",
        Modality.TEXT,
        f"{HANDLERS}.text:ZeroShotHandler",
        "the closest of the given labels, by embedding similarity",
        OutputShape.CLASSIFICATION,
        params=ZeroShotParams,
        explainer=TOKEN_ATTRIBUTIONS,
        model=ModelNeeds(
            description="a text encoder directory with its tokenizer", uses_default_model=True
        ),
        chunk_size=TEXT_CHUNK,
    ),
    TaskSpec(
        "classify-text",
        Modality.TEXT,
        f"{HANDLERS}.text:ClassifyHandler",
        "a trained text classifier's label",
        OutputShape.CLASSIFICATION,
        params=ClassifyTextParams,
        explainer=TOKEN_ATTRIBUTIONS,
        model=ModelNeeds(
            architectures=("ForSequenceClassification",),
            description="an AutoModelForSequenceClassification directory",
        ),
        training=TrainingSupport(
            f"{RECIPES}.text:TextRecipe",
            dp=True,
            base_task="embed",
            base_defaults_to_default_model=True,
        ),
        chunk_size=TEXT_CHUNK,
    ),
    TaskSpec(
        "classify-image",
        Modality.IMAGE,
        f"{HANDLERS}.image:ImageClassifyHandler",
        "an image classifier's label",
        OutputShape.CLASSIFICATION,
        explainer=ExplainerSpec(
            "integrated_gradients",
            note="a saliency grid; measured against occlusion in bench/modalities.py",
        ),
        model=ModelNeeds(
            architectures=("ForImageClassification",),
            files=ModelFiles.PROCESSOR,
            description="an AutoModelForImageClassification directory with its image processor",
        ),
        training=TrainingSupport(f"{RECIPES}.image:ImageRecipe", dp_refusal=NO_DP_MEDIA),
        chunk_size=32,
    ),
    TaskSpec(
        "detect-objects",
        Modality.IMAGE,
        f"{HANDLERS}.detect:DetectObjectsHandler",
        "objects in an image: labelled boxes with scores (DETR, YOLOS, RT-DETR families)",
        OutputShape.DETECTIONS,
        params=DetectParams,
        explainer=ExplainerSpec(
            "integrated_gradients",
            steps=16,
            note="a saliency grid per box (the 5 most confident), for the box's score: its "
            "query's probability of its label, from a black image; each box is `steps` "
            "forward and backward passes of the whole detector",
        ),
        model=ModelNeeds(
            architectures=("ForObjectDetection",),
            files=ModelFiles.PROCESSOR,
            description="an AutoModelForObjectDetection directory with its image processor",
        ),
        chunk_size=16,
        # a DETR-R50 at 800 px on 2 CPU cores: ~2 s a pass, 80 passes an image explained
        explained_chunk_size=2,
    ),
    TaskSpec(
        "embed-image",
        Modality.IMAGE,
        f"{HANDLERS}.image_embed:ImageEmbedHandler",
        "image embeddings (L2-normalised) from CLIP's image tower or a vision encoder; `embed` "
        "with the same CLIP directory puts texts in the same space",
        OutputShape.EMBEDDING,
        model=ModelNeeds(
            files=ModelFiles.PROCESSOR,
            description="a CLIP (or other image-text) directory, or a vision encoder "
            "(ViT, DINOv2...), with its image processor",
        ),
        chunk_size=32,
    ),
    TaskSpec(
        "classify-audio",
        Modality.AUDIO,
        f"{HANDLERS}.audio:AudioClassifyHandler",
        "an audio classifier's label",
        OutputShape.CLASSIFICATION,
        explainer=ExplainerSpec(
            "segment_ablation",
            note="attribution per time segment; "
            "why and what was measured: workers/explain/audio.py",
        ),
        model=ModelNeeds(
            architectures=("ForAudioClassification", "ForSequenceClassification"),
            files=ModelFiles.PROCESSOR,
            description="an AutoModelForAudioClassification directory with its feature extractor",
        ),
        training=TrainingSupport(f"{RECIPES}.audio:AudioRecipe", dp_refusal=NO_DP_MEDIA),
        chunk_size=16,
    ),
    TaskSpec(
        "transcribe",
        Modality.AUDIO,
        f"{HANDLERS}.audio:TranscribeHandler",
        "speech to text (CTC such as wav2vec2, or sequence-to-sequence such as Whisper)",
        OutputShape.TRANSCRIPT,
        model=ModelNeeds(
            architectures=("ForCTC", "ForConditionalGeneration", "ForSpeechSeq2Seq"),
            files=ModelFiles.PROCESSOR,
            description="a speech recognition directory (CTC such as wav2vec2, "
            "or sequence-to-sequence such as Whisper) with its "
            "processor",
        ),
        chunk_size=16,
    ),
    TaskSpec(
        "classify-records",
        Modality.RECORDS,
        f"{HANDLERS}.records:ClassifyRecordsHandler",
        "a records classifier's label",
        OutputShape.CLASSIFICATION,
        explainer=RECORD_ATTRIBUTIONS,
        model=_records_model("classify-records"),
        training=TrainingSupport(f"{RECIPES}.records:RecordsRecipe", dp=True),
        chunk_size=512,
    ),
    TaskSpec(
        "regress-records",
        Modality.RECORDS,
        f"{HANDLERS}.records:RegressRecordsHandler",
        "a records regressor's value",
        OutputShape.REGRESSION,
        explainer=RECORD_ATTRIBUTIONS,
        model=_records_model("regress-records"),
        training=TrainingSupport(f"{RECIPES}.records:RecordsRecipe", target=Target.VALUE, dp=True),
        chunk_size=512,
    ),
    TaskSpec(
        "generate",
        Modality.TEXT,
        f"{HANDLERS}.generate:GenerateHandler",
        "text from a prompt template over the item's fields (summarise, translate, "
        "extract into JSON), on a sequence-to-sequence or decoder-only model",
        OutputShape.GENERATION,
        params=GenerateParams,
        explainer=ExplainerSpec(
            "feature_ablation",
            steps=1,
            note="feature ablation over the prompt's own tokens (each hidden from attention "
            "in turn), for the log-probability of the generated sequence under teacher "
            "forcing; off unless asked (--explain); why and what was measured: "
            "workers/explain/generation.py",
        ),
        model=ModelNeeds(
            architectures=("ForConditionalGeneration", "ForCausalLM", "LMHeadModel"),
            description="an AutoModelForSeq2SeqLM or AutoModelForCausalLM directory "
            "with its tokenizer",
        ),
        training=TrainingSupport(f"{RECIPES}.generate:GenerateRecipe", target=Target.TEXT, dp=True),
        chunk_size=64,
    ),
    TaskSpec(
        "answer-question",
        Modality.TEXT,
        f"{HANDLERS}.answers:AnswerQuestionHandler",
        "the answer to a question, as a span of a context (extractive); none where the "
        "context holds no answer",
        OutputShape.ANSWER,
        params=AnswerQuestionParams,
        explainer=ExplainerSpec(
            "layer_integrated_gradients",
            note="LayerIntegratedGradients on the input word embeddings for the answer's "
            "start and end logits, over the question's and the context's tokens",
        ),
        model=ModelNeeds(
            architectures=("ForQuestionAnswering",),
            description="an AutoModelForQuestionAnswering directory with a fast tokenizer",
        ),
        chunk_size=64,
    ),
    TaskSpec(
        "extract-entities",
        Modality.TEXT,
        f"{HANDLERS}.entities:ExtractEntitiesHandler",
        "named entities (people, places, e-mail addresses...) as labelled spans of the text",
        OutputShape.ENTITIES,
        params=ExtractEntitiesParams,
        explainer=ExplainerSpec(
            "layer_integrated_gradients",
            note="LayerIntegratedGradients on the input word embeddings, one pass per entity "
            "for its label's probability over the entity's tokens",
        ),
        model=ModelNeeds(
            architectures=("ForTokenClassification",),
            description="an AutoModelForTokenClassification directory with a fast tokenizer",
        ),
        training=TrainingSupport(
            f"{RECIPES}.entities:EntitiesRecipe",
            target=Target.SPANS,
            dp=True,
            base_task="embed",
            base_defaults_to_default_model=True,
        ),
        chunk_size=128,
    ),
)
