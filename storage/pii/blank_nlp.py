"""Presidio's NLP engine on a blank spaCy pipeline: tokens for the context words, no model.

Presidio's default engine loads en_core_web_lg (and would try to download it). Every recognizer
used here works on the raw text, so spaCy only has to split words for the context enhancer,
which looks for words such as "phone" or "信用卡" just before a match. A blank pipeline has no
lemmatizer and leaves `lemma_` empty, which would silently turn context off; a one-line
component sets the lemma to the lower-cased word instead. Imported lazily (spaCy is slow to
import), only by storage.pii.analyzer's builder."""

import spacy
from presidio_analyzer.nlp_engine import SlimSpacyNlpEngine
from spacy.language import Language
from spacy.tokens import Doc

LEMMA_COMPONENT = "sluice_pii_lower_lemma"


@Language.component(LEMMA_COMPONENT)
def lower_lemma(doc: Doc) -> Doc:
    for tok in doc:
        tok.lemma_ = tok.lower_
    return doc


class BlankSpacyNlpEngine(SlimSpacyNlpEngine):
    """SlimSpacyNlpEngine (tokens and lemmas, no entities) whose pipeline is `spacy.blank`: no
    model to load, nothing to download. One language; see analyzer.LANGUAGE."""

    def __init__(self, language: str) -> None:
        super().__init__(models=[{"lang_code": language, "model_name": "blank"}])
        self.language = language
        self.auto_download = False

    def load(self) -> None:
        nlp = spacy.blank(self.language)
        nlp.add_pipe(LEMMA_COMPONENT)
        self.nlp = {self.language: nlp}  # type: ignore[assignment]  # Presidio annotates None
