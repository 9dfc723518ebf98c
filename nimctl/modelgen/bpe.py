"""The byte-level BPE tokenizer every generated model is given, trained on a few sentences.

Byte-level, so any input text (any language, any bytes) tokenizes without <unk>; filled up to an
exact size, so that every id a random model may sample decodes to a real token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def train_bpe(
    corpus: Sequence[str],
    vocab_size: int,
    special: Sequence[str],
    plain: Sequence[str],
    filler: str = "<|reserved_special_token_{}|>",
) -> Tokenizer:
    """`special` tokens are skipped when decoding; `plain` ones (reasoning and tool markers that
    vLLM's parsers look for in the text) are kept. Learned tokens come first, then `special` then
    `plain` in the order given, then fillers up to `vocab_size`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(special) - len(plain),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
    # A small corpus may run out of merges: fill up so no embedding row is a hole in the vocab.
    missing = vocab_size - tok.get_vocab_size(with_added_tokens=True)
    reserved = [filler.format(i) for i in range(max(missing, 0))]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in reserved])
    return tok
