"""Hugging Face ``tokenizer.json`` tokenizers behind the sampler's interface.

:class:`HFTokenizer` wraps ``tokenizers.Tokenizer`` (the Rust library behind
Hugging Face's fast tokenizers; the ``hf`` extra) with the methods the
character tokenizer of the synthetic tasks has: ``encode``, ``decode``,
``encode_batch`` into a padded int32 array, ``decode_batch``, and the
``eos_ids`` / ``pad_id`` / ``vocab_size`` a sampler needs. Stop and padding
ids come from the checkpoint directory's ``generation_config.json`` and
``config.json`` when it has them, as ``transformers`` reads them.
"""

import json
import os
from typing import Any, Sequence

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
PAD_SIDES = ("left", "right")
# Common end-of-sequence tokens, for a directory that names none.
EOS_TOKENS = ("<|endoftext|>", "<|im_end|>", "<|end_of_text|>", "<|eot_id|>",
              "</s>", "<eos>")
# Common padding tokens, likewise.
PAD_TOKENS = ("<|endoftext|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>")


def _tokenizers():
  try:
    import tokenizers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "HFTokenizer needs the 'tokenizers' package; install the hf extra: "
        "pip install -e \".[hf]\"") from e
  return tokenizers


def _read_json(directory: str, name: str) -> dict[str, Any]:
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as fh:
    return json.load(fh)


def _as_ids(value: Any) -> tuple[int, ...]:
  if value is None:
    return ()
  if isinstance(value, (list, tuple)):
    return tuple(int(v) for v in value)
  return (int(value),)


def _token_content(value: Any) -> str | None:
  """``tokenizer_config.json`` writes a token as a string or a dict."""
  if isinstance(value, dict):
    return value.get("content")
  return value if isinstance(value, str) else None


class HFTokenizer:
  """A ``tokenizer.json`` tokenizer with padded batch encoding.

  Example::

    tok = HFTokenizer("/path/to/Qwen2.5-0.5B")
    prompts_BxP, lengths_B = tok.encode_batch(texts, 256)

  Attributes:
    tokenizer: the wrapped ``tokenizers.Tokenizer``.
    eos_ids: ids that end a sequence: ``eos_token_id`` of
      ``generation_config.json``, else of ``config.json``, else the
      ``eos_token`` of ``tokenizer_config.json``, else those of
      ``EOS_TOKENS`` the vocabulary has.
    pad_id: the padding id: ``pad_token_id`` of ``generation_config.json``
      or ``config.json``, else the ``pad_token`` of
      ``tokenizer_config.json``, else the first of ``PAD_TOKENS`` in the
      vocabulary, else the first eos id, else 0. Padding is masked out
      downstream, so its value only matters for display.
    vocab_size: the number of ids, added tokens included. A model's
      embedding may be larger (rounded up); ids past this decode to nothing.
  """

  def __init__(self, path_or_file: str | os.PathLike, *,
               eos_ids: Sequence[int] | None = None,
               pad_id: int | None = None):
    """Loads the tokenizer.

    Args:
      path_or_file: a checkpoint directory holding ``tokenizer.json``, or
        the path of a ``tokenizer.json``; the JSON files that name stop and
        padding ids are read from the same directory.
      eos_ids: stop ids to use instead of the directory's.
      pad_id: padding id to use instead of the directory's.

    Raises:
      ImportError: ``tokenizers`` is not installed.
      FileNotFoundError: no ``tokenizer.json``.
    """
    tokenizers = _tokenizers()
    path = os.fspath(path_or_file)
    if os.path.isdir(path):
      directory, file = path, os.path.join(path, TOKENIZER_FILE)
    else:
      directory, file = os.path.dirname(path) or ".", path
    if not os.path.isfile(file):
      raise FileNotFoundError(
          f"No tokenizer at {file}: expected a Hugging Face {TOKENIZER_FILE} "
          "(the fast-tokenizer file saved next to the model).")
    self.tokenizer = tokenizers.Tokenizer.from_file(file)
    self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
    gen = _read_json(directory, "generation_config.json")
    model = _read_json(directory, "config.json")
    tok_cfg = _read_json(directory, "tokenizer_config.json")

    if eos_ids is None:
      eos_ids = (_as_ids(gen.get("eos_token_id"))
                 or _as_ids(model.get("eos_token_id"))
                 or self._ids_of([_token_content(tok_cfg.get("eos_token"))])
                 or self._ids_of(EOS_TOKENS))
    self.eos_ids = tuple(int(i) for i in eos_ids)

    if pad_id is None:
      found = (_as_ids(gen.get("pad_token_id"))
               or _as_ids(model.get("pad_token_id"))
               or self._ids_of([_token_content(tok_cfg.get("pad_token"))])
               or self._ids_of(PAD_TOKENS) or self.eos_ids or (0,))
      pad_id = found[0]
    self.pad_id = int(pad_id)

  def _ids_of(self, tokens: Sequence[str | None]) -> tuple[int, ...]:
    """Ids of those ``tokens`` the vocabulary has, in order."""
    ids = (self.tokenizer.token_to_id(t) for t in tokens if t)
    return tuple(i for i in ids if i is not None)

  def encode(self, text: str, *, add_special_tokens: bool = True
             ) -> list[int]:
    """Token ids of ``text``.

    Args:
      text: the string.
      add_special_tokens: apply the tokenizer's post-processor (e.g.
        Llama 3's ``<|begin_of_text|>``), as ``transformers`` does by
        default.
    """
    if not isinstance(text, str):
      raise ValueError(f"encode: text must be a str, got {type(text)}.")
    return self.tokenizer.encode(
        text, add_special_tokens=add_special_tokens).ids

  def decode(self, ids: Any, *, stop_at_eos: bool = True,
             skip_special_tokens: bool = True) -> str:
    """Text of a 1-D id sequence.

    Leading padding (left-padded prompts) is dropped; with ``stop_at_eos``
    the text ends before the first id of ``eos_ids``; padding after that
    is dropped too.

    Args:
      ids: a 1-D sequence or array of ids.
      stop_at_eos: end at the first stop id.
      skip_special_tokens: leave special tokens out of the text.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
      raise ValueError(f"decode: ids must be 1-D, got shape {ids.shape}; use "
                       "decode_batch for batches.")
    ids = ids.tolist()
    start = 0
    while start < len(ids) and ids[start] == self.pad_id:
      start += 1
    ids = ids[start:]
    if stop_at_eos:
      stops = [n for n, i in enumerate(ids) if i in self.eos_ids]
      if stops:
        ids = ids[:stops[0]]
    ids = [i for i in ids if i != self.pad_id]
    return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

  def encode_batch(self, texts: Sequence[str], length: int, *,
                   pad: str = "left", add_special_tokens: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Encodes texts into a padded ``[N, length]`` int32 array.

    Args:
      texts: N strings.
      length: the padded length L.
      pad: ``"left"`` puts ``pad_id`` before the tokens (prompts, so that
        they end at the same position), ``"right"`` after them.
      add_special_tokens: as in :meth:`encode`.

    Returns:
      ``(tokens_NxL, lengths_N)``, both int32; ``lengths_N`` counts each
      text's tokens.

    Raises:
      ValueError: a bad ``pad`` or ``length``, a single string, or a text
        with more than ``length`` tokens (named by index).
    """
    if pad not in PAD_SIDES:
      raise ValueError(
          f"encode_batch: pad must be one of {PAD_SIDES}, got {pad!r}.")
    if isinstance(texts, str):
      raise ValueError("encode_batch: texts must be a sequence of strings, "
                       "got one string; wrap it in a list.")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
      raise ValueError(
          f"encode_batch: length must be an int >= 0, got {length!r}.")
    texts = list(texts)
    encodings = self.tokenizer.encode_batch(
        texts, add_special_tokens=add_special_tokens) if texts else []
    tokens_NxL = np.full((len(texts), length), self.pad_id, np.int32)
    lengths_N = np.zeros((len(texts),), np.int32)
    for n, enc in enumerate(encodings):
      ids = enc.ids
      if len(ids) > length:
        raise ValueError(
            f"encode_batch: text {n} ({texts[n][:40]!r}...) has {len(ids)} "
            f"tokens, more than length={length}; pass a larger length or "
            "shorten the text.")
      if ids:
        if pad == "left":
          tokens_NxL[n, length - len(ids):] = ids
        else:
          tokens_NxL[n, :len(ids)] = ids
      lengths_N[n] = len(ids)
    return tokens_NxL, lengths_N

  def decode_batch(self, tokens: Any, *, stop_at_eos: bool = True,
                   skip_special_tokens: bool = True) -> list:
    """Decodes every row of an ``[..., L]`` id array.

    Args:
      tokens: ids of rank >= 2, e.g. ``tokens_NxL`` or ``tokens_BxGxT``.
      stop_at_eos: as in :meth:`decode`.
      skip_special_tokens: as in :meth:`decode`.

    Returns:
      A list of strings for rank 2, nested lists for higher ranks.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim < 2:
      raise ValueError(f"decode_batch: tokens must have rank >= 2, got shape "
                       f"{tokens.shape}; use decode for one sequence.")
    if tokens.ndim == 2:
      return [self.decode(row, stop_at_eos=stop_at_eos,
                          skip_special_tokens=skip_special_tokens)
              for row in tokens]
    return [self.decode_batch(t, stop_at_eos=stop_at_eos,
                              skip_special_tokens=skip_special_tokens)
            for t in tokens]
