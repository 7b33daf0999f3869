"""Tokenizers of the hub models' kinds, written by code from a word list: no hub download.

The tiny twins (see `twins.py`) need the same tokenizer classes as the models they stand for, so that
the prompt limits and the pipelines' own tokenisation run exactly as they would: a CLIP byte-level BPE
(Stable Diffusion 2.1, SDXL, FLUX.1's pooled encoder), a T5 SentencePiece-style unigram (FLUX.1) and a
Qwen2 byte-level BPE with a chat template (FLUX.2 [klein]). Their vocabularies are small: every byte, and
the words given merged whole; any other word is spelled out in bytes, as a real BPE does with a rare one.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

# Enough words for test prompts to tokenise into whole words; anything else still tokenises (by bytes).
_WORDS = (
    "a an the on of in with and to make it is this red green blue yellow white black orange purple circle "
    "square triangle star cat dog house car tree sky background left right top bottom center one two three "
    "photo picture painting style sunset mountain city river"
)
DEFAULT_WORDS = tuple(_WORDS.split())

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


@cache
def _byte_alphabet() -> tuple[str, ...]:
    """GPT-2's printable stand-in for each of the 256 bytes (what byte-level BPE vocabularies hold)."""
    from tokenizers.pre_tokenizers import ByteLevel

    return tuple(ByteLevel.alphabet())


def _word_merges(pieces: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Left-to-right merges that build `pieces` (a word's symbols) into one token, and what they make."""
    merges, made = [], []
    current = pieces[0]
    for piece in pieces[1:]:
        merges.append((current, piece))
        current += piece
        made.append(current)
    return merges, made


def _bpe_tables(words: Sequence[str], *, end_of_word: str = "", space_prefix: str = ""):
    """Vocabulary (byte symbols, then each word's merges) and the merge list of a tiny byte-level BPE."""
    alphabet = list(_byte_alphabet())
    vocab: dict[str, int] = {}
    for symbol in alphabet:
        vocab.setdefault(symbol, len(vocab))
    if end_of_word:
        for symbol in alphabet:
            vocab.setdefault(symbol + end_of_word, len(vocab))
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in dict.fromkeys(w.lower() for w in words):
        for variant in ([word] if not space_prefix else [word, space_prefix + word]):
            symbols = [c for c in variant]
            if end_of_word:
                symbols[-1] += end_of_word
            if len(symbols) < 2:
                continue
            pairs, made = _word_merges(symbols)
            for pair, token in zip(pairs, made, strict=True):
                if pair not in seen:
                    seen.add(pair)
                    merges.append(pair)
                vocab.setdefault(token, len(vocab))
    return vocab, merges


def clip_tokenizer(words: Sequence[str] = DEFAULT_WORDS, max_length: int = 77, pad_token: str = "<|endoftext|>"):
    """A `CLIPTokenizer` (byte-level BPE, `</w>` word ends, 77 tokens) over `words`. SD 2.x pads with "!"."""
    from transformers import CLIPTokenizer

    vocab, merges = _bpe_tables(words, end_of_word="</w>")
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token)
    tokenizer.model_max_length = max_length
    return tokenizer


def t5_tokenizer(words: Sequence[str] = DEFAULT_WORDS, max_length: int = 512):
    """A `T5TokenizerFast` (unigram over "▁word" pieces and single characters, `</s>` at the end)."""
    from transformers import T5TokenizerFast

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    seen = {p for p, _ in pieces}
    for word in dict.fromkeys(w.lower() for w in words):
        if "▁" + word not in seen:
            seen.add("▁" + word)
            pieces.append(("▁" + word, -1.0))
    for code in range(32, 127):
        for piece in (chr(code), "▁" + chr(code)):
            if piece not in seen:
                seen.add(piece)
                pieces.append((piece, -5.0))
    tokenizer = T5TokenizerFast(vocab=pieces, extra_ids=0)
    tokenizer.model_max_length = max_length
    return tokenizer


def qwen2_tokenizer(words: Sequence[str] = DEFAULT_WORDS, max_length: int = 512):
    """A `Qwen2TokenizerFast` (byte-level BPE, "Ġ" marks a space) with Qwen's chat markers and template."""
    from transformers import Qwen2TokenizerFast

    vocab, merges = _bpe_tables(words, space_prefix="Ġ")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    tokenizer.model_max_length = max_length
    return tokenizer
