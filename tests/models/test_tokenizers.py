"""HFTokenizer over a tiny byte-level BPE trained on the spot."""

import json
import os
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np
import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import trainers

from jaxrl_group.models.tokenizers import HFTokenizer

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = ["the cat sat on the mat", "hello world", "2 + 2 = 4",
          "the answer is 42"] * 10


def train_tokenizer() -> tokenizers.Tokenizer:
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=300, special_tokens=SPECIALS, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(CORPUS, trainer)
  return tok


class HFTokenizerTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # pylint: disable-next=consider-using-with
    cls.tmp = tempfile.TemporaryDirectory()
    cls.raw = train_tokenizer()
    cls.dir = cls.make_dir("model", generation={"eos_token_id": [2, 0],
                                                "pad_token_id": 1})

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  @classmethod
  def make_dir(cls, name, generation=None, config=None):
    path = os.path.join(cls.tmp.name, name)
    os.makedirs(path)
    cls.raw.save(os.path.join(path, "tokenizer.json"))
    for fname, content in [("generation_config.json", generation),
                           ("config.json", config)]:
      if content is not None:
        with open(os.path.join(path, fname), "w") as fh:
          json.dump(content, fh)
    return path

  def test_special_ids_from_generation_config(self):
    tok = HFTokenizer(self.dir)
    # Specials come first in training: <|endoftext|> 0, <|im_start|> 1,
    # <|im_end|> 2.
    self.assertEqual(tok.tokenizer.token_to_id("<|im_end|>"), 2)
    self.assertEqual(tok.eos_ids, (2, 0))
    self.assertEqual(tok.pad_id, 1)
    self.assertEqual(tok.vocab_size, self.raw.get_vocab_size())
    self.assertLessEqual(tok.vocab_size, 300)
    self.assertGreater(tok.vocab_size, 256 + 3)   # bytes, specials, merges

  def test_fallbacks(self):
    # config.json when there is no generation_config.json.
    tok = HFTokenizer(self.make_dir("cfg", config={"eos_token_id": 2}))
    self.assertEqual(tok.eos_ids, (2,))
    # Neither: the known end token the vocabulary has; pad falls back to it.
    tok = HFTokenizer(self.make_dir("bare"))
    self.assertEqual(tok.eos_ids, (0, 2))   # <|endoftext|>, <|im_end|>
    self.assertEqual(tok.pad_id, 0)
    # The file path works too, and explicit ids win.
    tok = HFTokenizer(os.path.join(self.dir, "tokenizer.json"), eos_ids=[5],
                      pad_id=7)
    self.assertEqual((tok.eos_ids, tok.pad_id), ((5,), 7))

  def test_encode_decode_round_trip(self):
    tok = HFTokenizer(self.dir)
    for text in ["the cat sat", "hello, wörld 😀", ""]:
      ids = tok.encode(text)
      self.assertEqual(ids, self.raw.encode(text).ids)
      self.assertEqual(tok.decode(ids), text)
    # Merges were learnt: a frequent word is fewer tokens than bytes.
    self.assertLess(len(tok.encode("the cat")), len("the cat"))

  def test_decode_stops_and_skips_padding(self):
    tok = HFTokenizer(self.dir)
    ids = tok.encode("hello world")
    # Left padding (pad id 1), then the text, an eos (2) and more text.
    row = [1, 1] + ids + [2] + tok.encode("the mat")
    self.assertEqual(tok.decode(row), "hello world")
    self.assertEqual(tok.decode(row, stop_at_eos=False),
                     "hello worldthe mat")
    self.assertEqual(
        tok.decode(row, stop_at_eos=False, skip_special_tokens=False),
        "hello world<|im_end|>the mat")
    with self.assertRaisesRegex(ValueError, "decode_batch"):
      tok.decode(np.zeros((2, 3), np.int32))

  def test_encode_batch_pads(self):
    tok = HFTokenizer(self.dir)
    texts = ["hello world", "the cat sat on the mat", "4"]
    ids = [tok.encode(t) for t in texts]
    length = max(map(len, ids)) + 2
    left, lengths = tok.encode_batch(texts, length)
    self.assertEqual(left.dtype, np.int32)
    self.assertEqual(lengths.dtype, np.int32)
    self.assertEqual(left.shape, (3, length))
    np.testing.assert_array_equal(lengths, [len(i) for i in ids])
    for row, i in zip(left, ids):
      np.testing.assert_array_equal(row[length - len(i):], i)
      np.testing.assert_array_equal(row[:length - len(i)], 1)   # pad id
    right, _ = tok.encode_batch(texts, length, pad="right")
    for row, i in zip(right, ids):
      np.testing.assert_array_equal(row[:len(i)], i)
      np.testing.assert_array_equal(row[len(i):], 1)
    self.assertEqual(tok.decode_batch(left), texts)
    self.assertEqual(tok.decode_batch(right[None]), [texts])

  def test_encode_batch_errors(self):
    tok = HFTokenizer(self.dir)
    with self.assertRaisesRegex(ValueError, "text 1 .* more than length=2"):
      tok.encode_batch(["4", "the cat sat on the mat"], 2)
    with self.assertRaisesRegex(ValueError, "pad must be one of"):
      tok.encode_batch(["4"], 4, pad="middle")
    with self.assertRaisesRegex(ValueError, "wrap it in a list"):
      tok.encode_batch("hello", 4)
    tokens, lengths = tok.encode_batch([], 4)
    self.assertEqual((tokens.shape, lengths.shape), ((0, 4), (0,)))

  def test_missing_file_and_package(self):
    empty = os.path.join(self.tmp.name, "empty")
    os.makedirs(empty)
    with self.assertRaisesRegex(FileNotFoundError,
                                "No tokenizer at .*empty/tokenizer.json"):
      HFTokenizer(empty)
    with mock.patch.dict(sys.modules, {"tokenizers": None}):
      with self.assertRaisesRegex(ImportError, r"pip install -e \"\.\[hf\]\""):
        HFTokenizer(self.dir)


if __name__ == "__main__":
  absltest.main()
