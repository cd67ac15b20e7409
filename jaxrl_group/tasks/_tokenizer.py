"""A fixed 64-token character vocabulary for the synthetic tasks.

The small language models of the synthetic tasks have ``vocab_size = 64``;
this module fixes what the 64 ids mean. Ids 0-3 are special (``<pad>``,
``<eos>``, ``<bos>``, ``<unk>``), ids 4-13 are the digits ``'0'``-``'9'`` in
order (so ``DIGIT0_ID + d`` is digit ``d`` on device), then punctuation, the
lowercase letters and a few more symbols. ``CHAR_TO_ID`` is a numpy table
from ASCII code to id, so jitted code can map characters to ids with a
gather.
"""

from typing import Any, Sequence

import numpy as np

PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
UNK_ID = 3
DIGIT0_ID = 4

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
_DIGITS = "0123456789"
_PUNCT = " +-*/=().,:;?!"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_MORE = "\n'\"<>[]_%#"

# Token strings by id: the four specials, then one character per id.
VOCAB = SPECIAL_TOKENS + tuple(_DIGITS + _PUNCT + _LETTERS + _MORE)
VOCAB_SIZE = 64
assert len(VOCAB) == VOCAB_SIZE and len(set(VOCAB)) == VOCAB_SIZE
assert VOCAB[DIGIT0_ID:DIGIT0_ID + 10] == tuple(_DIGITS)

_CHAR_IDS = {c: i for i, c in enumerate(VOCAB) if i >= len(SPECIAL_TOKENS)}

# ASCII code -> id; characters outside the vocabulary map to UNK_ID.
CHAR_TO_ID = np.full((128,), UNK_ID, np.int32)
for _c, _i in _CHAR_IDS.items():
  CHAR_TO_ID[ord(_c)] = _i
CHAR_TO_ID.setflags(write=False)

PAD_SIDES = ("left", "right")
ENCODE_ERRORS = ("strict", "unk")


class CharTokenizer:
  """Character tokenizer over the fixed 64-id vocabulary ``VOCAB``."""

  vocab_size = VOCAB_SIZE
  pad_id = PAD_ID
  eos_id = EOS_ID
  bos_id = BOS_ID
  unk_id = UNK_ID

  def encode(self, text: str, *, errors: str = "strict") -> list[int]:
    """Maps each character of ``text`` to its id.

    Args:
      text: the string; no special tokens are added.
      errors: ``"strict"`` raises on a character outside the vocabulary,
        ``"unk"`` maps it to ``UNK_ID``.

    Returns:
      One id per character.
    """
    if errors not in ENCODE_ERRORS:
      raise ValueError(
          f"encode: errors must be one of {ENCODE_ERRORS}, got {errors!r}.")
    ids = []
    for pos, c in enumerate(text):
      i = _CHAR_IDS.get(c)
      if i is None:
        if errors == "strict":
          raise ValueError(
              f"encode: character {c!r} at position {pos} of {text!r} is not "
              f"in the vocabulary; pass errors='unk' to map it to <unk>.")
        i = UNK_ID
      ids.append(i)
    return ids

  def decode(self, ids: Any, *, stop_at_eos: bool = True) -> str:
    """Maps ids back to text.

    ``<pad>`` is skipped anywhere. With ``stop_at_eos`` the text ends before
    the first ``<eos>``; otherwise ``<eos>``, like ``<bos>`` and ``<unk>``, is
    written as its token string.

    Args:
      ids: a 1-D sequence or array of ids.
      stop_at_eos: end at the first ``<eos>``.

    Returns:
      The decoded string.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
      raise ValueError(f"decode: ids must be 1-D, got shape {ids.shape}; use "
                       f"decode_batch for batches.")
    out = []
    for i in ids.tolist():
      if not 0 <= i < VOCAB_SIZE:
        raise ValueError(
            f"decode: id {i} is outside the vocabulary [0, {VOCAB_SIZE}).")
      if i == PAD_ID:
        continue
      if i == EOS_ID and stop_at_eos:
        break
      out.append(VOCAB[i])
    return "".join(out)

  def encode_batch(self, texts: Sequence[str], length: int, *,
                   pad: str = "left", errors: str = "strict"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Encodes texts into a padded ``[N, length]`` int32 array.

    Args:
      texts: N strings.
      length: the padded length L.
      pad: ``"left"`` puts ``<pad>`` before the text (prompts, so that they
        end at the same position), ``"right"`` after it.
      errors: as in :meth:`encode`.

    Returns:
      ``(tokens_NxL, lengths_N)``, both int32; ``lengths_N`` counts the
      characters of each text.
    """
    if pad not in PAD_SIDES:
      raise ValueError(
          f"encode_batch: pad must be one of {PAD_SIDES}, got {pad!r}.")
    if isinstance(texts, str):
      raise ValueError("encode_batch: texts must be a sequence of strings, "
                       "got one string; wrap it in a list.")
    tokens_NxL = np.full((len(texts), length), PAD_ID, np.int32)
    lengths_N = np.zeros((len(texts),), np.int32)
    for n, text in enumerate(texts):
      ids = self.encode(text, errors=errors)
      if len(ids) > length:
        raise ValueError(
            f"encode_batch: text {n} ({text!r}) has {len(ids)} characters, "
            f"more than length={length}; pass a larger length.")
      if ids:
        if pad == "left":
          tokens_NxL[n, length - len(ids):] = ids
        else:
          tokens_NxL[n, :len(ids)] = ids
      lengths_N[n] = len(ids)
    return tokens_NxL, lengths_N

  def decode_batch(self, tokens: Any, *, stop_at_eos: bool = True) -> list:
    """Decodes every row of an ``[..., L]`` id array.

    Args:
      tokens: ids of rank >= 2, e.g. ``tokens_NxL`` or ``tokens_BxGxT``.
      stop_at_eos: as in :meth:`decode`.

    Returns:
      A list of strings for rank 2, nested lists for higher ranks.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim < 2:
      raise ValueError(f"decode_batch: tokens must have rank >= 2, got shape "
                       f"{tokens.shape}; use decode for one sequence.")
    if tokens.ndim == 2:
      return [self.decode(row, stop_at_eos=stop_at_eos) for row in tokens]
    return [self.decode_batch(t, stop_at_eos=stop_at_eos) for t in tokens]
