"""The 64-id character tokenizer."""

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

from jaxrl_group import tasks as T


class CharTokenizerTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tok = T.CharTokenizer()

  def test_vocabulary_layout(self):
    tok = self.tok
    self.assertEqual(tok.vocab_size, 64)
    self.assertLen(T.VOCAB, 64)
    self.assertLen(set(T.VOCAB), 64)
    self.assertEqual((tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id),
                     (0, 1, 2, 3))
    self.assertEqual((T.PAD_ID, T.EOS_ID, T.BOS_ID), (0, 1, 2))
    self.assertEqual(T.VOCAB[:4], ("<pad>", "<eos>", "<bos>", "<unk>"))
    # Digits are contiguous from id 4, so DIGIT0_ID + d is digit d.
    self.assertEqual(tok.encode("0123456789"), list(range(4, 14)))
    self.assertEqual(T.DIGIT0_ID, 4)
    for c in " +-*/=().,:;?!abcxyz":
      self.assertEqual(T.VOCAB[tok.encode(c)[0]], c)

  def test_encode_golden(self):
    # '1' -> 5, '2' -> 6, '+' -> 15, '=' -> 19 (4 specials, 10 digits, ' ').
    self.assertEqual(self.tok.encode("12+2="), [5, 6, 15, 6, 19])
    self.assertEqual(self.tok.encode(""), [])

  def test_roundtrip(self):
    text = "what is (12*3)-4? 32, yes: 'ok' [x_y] 10% #1!\n"
    ids = self.tok.encode(text)
    self.assertTrue(all(0 <= i < 64 for i in ids))
    self.assertEqual(self.tok.decode(ids), text)

  def test_unknown_character(self):
    with self.assertRaisesRegex(ValueError, r"'A'.*errors='unk'"):
      self.tok.encode("1+A=")
    self.assertEqual(self.tok.encode("1+A=", errors="unk"),
                     [5, 15, T.UNK_ID, 19])
    self.assertEqual(self.tok.decode([5, T.UNK_ID]), "1<unk>")
    with self.assertRaisesRegex(ValueError, "errors must be one of"):
      self.tok.encode("1", errors="ignore")

  def test_decode_pad_eos_bos(self):
    ids = [0, 0, 2, 5, 6, 0, 1, 7, 0]
    self.assertEqual(self.tok.decode(ids), "<bos>12")
    self.assertEqual(self.tok.decode(ids, stop_at_eos=False),
                     "<bos>12<eos>3")
    self.assertEqual(self.tok.decode(np.asarray([1, 5])), "")
    self.assertEqual(self.tok.decode(jnp.asarray([5, 1])), "1")
    with self.assertRaisesRegex(ValueError, "id 64 is outside"):
      self.tok.decode([5, 64])
    with self.assertRaisesRegex(ValueError, "decode_batch"):
      self.tok.decode([[5]])

  def test_encode_batch_left_and_right(self):
    tokens, lengths = self.tok.encode_batch(["1+2=", "", "12"], 5)
    self.assertEqual(tokens.dtype, np.int32)
    np.testing.assert_array_equal(
        tokens, [[0, 5, 15, 6, 19], [0, 0, 0, 0, 0], [0, 0, 0, 5, 6]])
    np.testing.assert_array_equal(lengths, [4, 0, 2])
    self.assertEqual(lengths.dtype, np.int32)
    tokens, _ = self.tok.encode_batch(["1+2=", "12"], 5, pad="right")
    np.testing.assert_array_equal(tokens, [[5, 15, 6, 19, 0],
                                           [5, 6, 0, 0, 0]])

  def test_encode_batch_errors(self):
    with self.assertRaisesRegex(ValueError, r"text 1 \('123456'\).*length=5"):
      self.tok.encode_batch(["1", "123456"], 5)
    with self.assertRaisesRegex(ValueError, "pad must be one of"):
      self.tok.encode_batch(["1"], 5, pad="middle")
    with self.assertRaisesRegex(ValueError, "wrap it in a list"):
      self.tok.encode_batch("12", 5)

  def test_decode_batch(self):
    tokens, _ = self.tok.encode_batch(["1+2=", "7"], 6)
    self.assertEqual(self.tok.decode_batch(tokens), ["1+2=", "7"])
    nested = np.stack([tokens, tokens[::-1]])
    self.assertEqual(self.tok.decode_batch(nested),
                     [["1+2=", "7"], ["7", "1+2="]])
    with self.assertRaisesRegex(ValueError, "rank >= 2"):
      self.tok.decode_batch([5, 6])

  def test_char_to_id_table(self):
    self.assertEqual(T.CHAR_TO_ID.shape, (128,))
    self.assertEqual(T.CHAR_TO_ID.dtype, np.int32)
    for code in range(128):
      c = chr(code)
      self.assertEqual(int(T.CHAR_TO_ID[code]),
                       self.tok.encode(c, errors="unk")[0], repr(c))
    self.assertEqual(int(T.CHAR_TO_ID[ord("A")]), T.UNK_ID)
    # Usable as a device gather.
    codes = jnp.asarray([ord(c) for c in "9*9="])
    np.testing.assert_array_equal(jnp.asarray(T.CHAR_TO_ID)[codes],
                                  self.tok.encode("9*9="))


if __name__ == "__main__":
  absltest.main()
