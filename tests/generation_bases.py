"""Tiny generator bases for the `generate` training tests, made in a second (random weights,
no downloads): a word-level tokenizer over a closed vocabulary, and T5-, BART-, Llama-,
GPT-2- and Mixtral-shaped models saved with save_pretrained (safetensors). The causal
tokenizer has a chat template, as the demo's does, so training must render prompts the way
inference does."""

import random
from pathlib import Path
from typing import Any

WORDS = ("a", "b", "c", "d", "e", "f", "g", "h")
SPECIAL = ("<pad>", "</s>", "<s>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|> {{ message['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
POSITIONS = 48


def word_rows(n: int, seed: int, longest: int = 3) -> list[dict[str, str]]:
    """`n` rows {"text": "a b c", "target": "c b a"} (the words reversed), no input twice:
    a held-out row is never one trained on."""
    rng = random.Random(seed)
    seen: dict[str, str] = {}
    while len(seen) < n:
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, longest))]
        seen.setdefault(" ".join(words), " ".join(reversed(words)))
    return [{"text": text, "target": target} for text, target in seen.items()]


def tokenizer(causal: bool) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*SPECIAL, *WORDS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    backend.add_special_tokens(list(SPECIAL))
    if not causal:  # T5-style: every encoding ends with </s>
        backend.post_processor = processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<s>",
        unk_token="<unk>",
        padding_side="left" if causal else "right",
        chat_template=CHAT_TEMPLATE if causal else None,
        clean_up_tokenization_spaces=False,
        model_max_length=POSITIONS,
    )


def build(kind: str, out: Path) -> Path:
    """A random `kind` model ("t5", "bart", "llama", "gpt2" or "mixtral") and its tokenizer
    in `out`."""
    import torch
    import transformers as tf

    tok = tokenizer(causal=kind not in ("t5", "bart"))
    ids: dict[str, Any] = {
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
    }
    torch.manual_seed(0)
    small: dict[str, Any] = {"vocab_size": len(tok), "tie_word_embeddings": False}
    decoder: dict[str, Any] = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": POSITIONS,
    }
    start: dict[str, Any] = {"decoder_start_token_id": tok.pad_token_id} if kind == "t5" else {}
    model: Any
    if kind == "t5":  # transformers 5 ties T5's output layer to its embeddings whatever it is told
        model = tf.T5ForConditionalGeneration(
            tf.T5Config(
                d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2,
                num_decoder_layers=2, dropout_rate=0.0, feed_forward_proj="relu",
                **small, **ids, **start,
            )
        )  # fmt: skip
    elif kind == "bart":
        model = tf.BartForConditionalGeneration(
            tf.BartConfig(
                d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                max_position_embeddings=POSITIONS, decoder_start_token_id=tok.eos_token_id,
                vocab_size=len(tok), **ids,
            )
        )  # fmt: skip
        start = {"decoder_start_token_id": tok.eos_token_id}
    elif kind == "gpt2":  # tied embeddings, as GPT-2's own
        model = tf.GPT2LMHeadModel(
            tf.GPT2Config(vocab_size=len(tok), n_positions=POSITIONS, n_embd=32, n_layer=2,
                          n_head=2, **ids)
        )  # fmt: skip
    elif kind == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**decoder, **small, **ids))
    elif kind == "mixtral":
        model = tf.MixtralForCausalLM(
            tf.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **decoder, **small, **ids)
        )
    else:
        raise ValueError(kind)
    model.generation_config = tf.GenerationConfig(do_sample=False, **ids, **start)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
