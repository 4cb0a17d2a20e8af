"""Two tiny text generators trained from scratch (no downloads) on one synthetic task, spelling
digits as words: "Spell: 4 0 7" -> "four zero seven". The `generate` task's demo models.

- a BART-shaped sequence-to-sequence model: encoder input the prompt, decoder target the words;
- a Llama-shaped decoder-only model trained on the chat-template rendering of one user turn
  holding the prompt, followed by the words.

Both use one WordPiece tokenizer whose whole words are the task's (digits, number words,
"Spell", ":") and the special tokens; any other word is spelled out in single characters.
The output is exact: `spell_digits` is the reference a test can compare greedy generations
against.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_DIGITS = 12
PROMPT_TEMPLATE = "Spell: {text}"
PAD, EOS, BOS, UNK = "<pad>", "</s>", "<s>", "<unk>"
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
SPECIAL_TOKENS = (PAD, EOS, BOS, UNK, *CHAT_TOKENS)
# Training strings run to 14 digits: lengths at the edge of the training range are the ones a
# small model gets wrong, so the 12 the models promise stay inside it.
TRAIN_MAX_DIGITS = MAX_DIGITS + 2
# Positions: the longest training sequence of the causal model is 35 tokens (BOS, a 17-token
# user turn, the assistant marker, 14 words, EOS); the seq2seq encoder reads 17 (the prompt and
# EOS), its decoder 15. The margins leave room, and are small enough for a test to see the cap.
CAUSAL_MAX_POSITIONS = 64
SEQ2SEQ_MAX_POSITIONS = 32
# BOS: the tokenizer adds no special tokens of its own (no post-processor), so the template
# writes `bos_token` itself and tokenizing its rendering gives exactly one BOS, with or without
# add_special_tokens. Tokens are split on whitespace, so the template's spaces are separators.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|> {{ message['content'] }} <|end|> "
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def spell_digits(text: str) -> str:
    """The task: "4 0 7" -> "four zero seven" (digits separated by whitespace)."""
    return " ".join(DIGIT_WORDS[int(d)] for d in text.split())


def spell_prompt(digits: str | Iterable[int]) -> str:
    """The prompt the models were trained on: "Spell: 4 0 7" for "4 0 7" or [4, 0, 7]."""
    text = digits if isinstance(digits, str) else " ".join(str(d) for d in digits)
    return PROMPT_TEMPLATE.format(text=text)


def random_digit_texts(n: int, seed: int, max_digits: int = MAX_DIGITS) -> list[str]:
    """`n` digit strings such as "4 0 7", lengths uniform in 1..max_digits."""
    rng = random.Random(seed)
    return [
        " ".join(str(rng.randrange(10)) for _ in range(rng.randint(1, max_digits)))
        for _ in range(n)
    ]


def training_digit_texts(n: int, seed: int, max_digits: int = TRAIN_MAX_DIGITS) -> list[str]:
    """Training strings: three in four uniform, one in four drawn from only one or two digits.
    Uniform strings almost never repeat a digit many times, and a model trained on them alone
    loses count in "6 6 6 6 6"."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        alphabet = rng.sample(range(10), rng.randint(1, 2)) if rng.random() < 0.25 else range(10)
        length = rng.randint(1, max_digits)
        texts.append(" ".join(str(rng.choice(alphabet)) for _ in range(length)))
    return texts


def repeated_digit_texts(max_digits: int = MAX_DIGITS) -> list[str]:
    """Every run of one digit, "0" to "9 9 9 9 9 9 9 9 9 9 9 9": the hardest strings to count."""
    return [" ".join([str(d)] * n) for d in range(10) for n in range(1, max_digits + 1)]


def vocabulary() -> dict[str, int]:
    """Special tokens, the task's words, then every ASCII letter, digit and punctuation mark
    alone and as a continuation ("##x"): other text has tokens too (the model never saw them),
    which is what transformers' stop-string matching needs to map tokens to text."""
    words = ["Spell", ":", *(str(d) for d in range(10)), *DIGIT_WORDS]
    chars = [c for c in string.ascii_letters + string.digits + string.punctuation]
    tokens = [*SPECIAL_TOKENS, *words]
    tokens += [c for c in chars if c not in tokens] + [f"##{c}" for c in chars]
    return {token: i for i, token in enumerate(tokens)}


def make_spell_tokenizer(*, causal: bool) -> Any:
    """A WordPiece fast tokenizer over `vocabulary()`: a prompt's words are whole tokens.

    Seq2seq: a post-processor appends EOS to every encoding, so an encoder input and a target
    both end with it (`tokenizer(prompt)` alone gives what the encoder was trained on); padding
    on the right (BART's positions are absolute). Causal: no post-processor (the chat template
    writes BOS), padding on the left, and the chat template.
    Decoding joins words with single spaces; skip_special_tokens drops EOS/pad/chat tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = vocabulary()
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, max_input_chars_per_word=100))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # "Spell: 4" -> Spell, :, 4
    # without cleanup: words joined by one space, "##" pieces glued on, nothing else changed
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    if not causal:
        backend.post_processor = processors.TemplateProcessing(
            single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, vocab[EOS])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        unk_token=UNK,
        padding_side="left" if causal else "right",
        chat_template=CHAT_TEMPLATE if causal else None,
        clean_up_tokenization_spaces=False,
        model_max_length=CAUSAL_MAX_POSITIONS if causal else SEQ2SEQ_MAX_POSITIONS,
    )


def save_spell_tokenizer(tokenizer: Any, out: Path) -> None:
    """save_pretrained with the chat template inside tokenizer_config.json (not a separate
    chat_template.jinja) and the class name every transformers version knows."""
    tokenizer.save_pretrained(out, save_jinja_files=False)
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    if config.get("chat_template") is None:
        config.pop("chat_template", None)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def tiny_bart(tokenizer: Any) -> Any:
    """A 2+2-layer BART. Its learned absolute positions make the alignment (word i reads
    digit i) easy to learn; they also mean the encoder input must be padded on the right."""
    from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig

    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=SEQ2SEQ_MAX_POSITIONS,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        # 0.02 (the default) leaves a model this small stuck at predicting the length only
        init_std=0.1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,  # BART's convention
        forced_eos_token_id=None,
    )
    model = BartForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model


def tiny_llama(tokenizer: Any) -> Any:
    """A 2-layer Llama (rotary positions, so left padding with an attention mask is exact)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=CAUSAL_MAX_POSITIONS,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model


def chat_prompt(tokenizer: Any, prompt: str) -> str:
    """What the generate handler feeds a chat model: one user turn and the assistant marker."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return str(rendered)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def training_examples(tokenizer: Any, texts: Sequence[str], *, causal: bool) -> list[Any]:
    """(input ids, target ids) per text, made by the same tokenizer calls as inference."""
    examples = []
    for text in texts:
        target = _encode(tokenizer, spell_digits(text))
        if causal:
            prompt = _encode(tokenizer, chat_prompt(tokenizer, spell_prompt(text)))
            examples.append((prompt, [*target, tokenizer.eos_token_id]))
        else:
            examples.append((_encode(tokenizer, spell_prompt(text)), target))  # both end in EOS
    return examples


def _padded(rows: Sequence[Sequence[int]], value: int) -> Any:
    import torch

    width = max(len(r) for r in rows)
    return torch.tensor([[*r, *([value] * (width - len(r)))] for r in rows])


def spell_batch(examples: Sequence[Any], pad_id: int, *, causal: bool) -> dict[str, Any]:
    """A right-padded training batch; the loss sees only the target tokens."""
    if causal:
        rows = [[*p, *t] for p, t in examples]
        labels = [[-100] * len(p) + list(t) for p, t in examples]
        input_ids = _padded(rows, pad_id)
        return {
            "input_ids": input_ids,
            "attention_mask": _padded([[1] * len(r) for r in rows], 0),
            "labels": _padded(labels, -100),
        }
    return {
        "input_ids": _padded([p for p, _ in examples], pad_id),
        "attention_mask": _padded([[1] * len(p) for p, _ in examples], 0),
        "labels": _padded([t for _, t in examples], -100),
    }


def train_spell_model(
    model: Any,
    tokenizer: Any,
    *,
    causal: bool,
    seed: int,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    pool: int = 8192,
    max_digits: int = TRAIN_MAX_DIGITS,
) -> list[float]:
    """AdamW with warm-up and cosine decay over a pool of training strings; returns the
    loss of each step. Deterministic for a given seed on one thread."""
    import math

    import torch

    texts = training_digit_texts(pool, seed, max_digits)
    examples = training_examples(tokenizer, texts, causal=causal)
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
    losses = []
    model.train()
    for _ in range(steps):
        picks = torch.randint(len(examples), (batch_size,), generator=gen).tolist()
        batch = spell_batch([examples[i] for i in picks], tokenizer.pad_token_id, causal=causal)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def generate_spellings(
    model: Any, tokenizer: Any, texts: Sequence[str], *, causal: bool
) -> list[str]:
    """Greedy generations for digit strings, in one (padded) batch, decoded to text."""
    import torch

    prompts = [spell_prompt(t) for t in texts]
    if causal:
        prompts = [chat_prompt(tokenizer, p) for p in prompts]
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=MAX_DIGITS + 1, do_sample=False)
    if causal:
        out = out[:, enc["input_ids"].shape[1] :]
    return [str(s) for s in tokenizer.batch_decode(out, skip_special_tokens=True)]
