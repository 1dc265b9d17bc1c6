"""Batch tokenisation equals the transformers tokenizer call; buckets."""

import numpy as np
import pytest

from codir_jax import data

SINGLES = [
    'hide new secretions from the parental units ',
    'A',
    '',
    'unflinchingly bleak and desperate ' * 20,
    'Ünïcödé "quotes" ok',
]
PAIRS = [
    ('A man is dancing.', 'A man wearing a hat is dancing.'),
    ('short', 'a much longer second sentence ' * 10),
    ('a very long first sentence ' * 10, 'tiny'),
    ('"stray', 'quote"'),
]


def _rows(ds):
  return [
      (ds.token_ids[a:b].tolist(), ds.type_ids[a:b].tolist())
      for a, b in zip(ds.offsets[:-1], ds.offsets[1:])
  ]


@pytest.mark.parametrize('max_len', [8, 16, 128])
def test_singles_match_transformers(minilm_tokenizer, max_len):
  s = data.GlueSplit(
      'sst2', 'dev', SINGLES, None, np.zeros(len(SINGLES), np.int32), True
  )
  ds = data.tokenize_split(s, minilm_tokenizer, max_len=max_len)
  ref = minilm_tokenizer(SINGLES, truncation=True, max_length=max_len)
  assert _rows(ds) == list(zip(ref['input_ids'], ref['token_type_ids']))
  assert ds.lengths.max() <= max_len
  assert ds.token_ids.dtype == np.int32 and len(ds) == len(SINGLES)
  assert ds.pad_id == minilm_tokenizer.pad_token_id


@pytest.mark.parametrize('max_len', [10, 32, 128])
def test_pairs_match_transformers(minilm_tokenizer, max_len):
  a, b = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
  s = data.GlueSplit('stsb', 'dev', a, b, np.zeros(len(a), np.float32), True)
  ds = data.tokenize_split(s, minilm_tokenizer, max_len=max_len)
  ref = minilm_tokenizer(a, b, truncation=True, max_length=max_len)
  assert _rows(ds) == list(zip(ref['input_ids'], ref['token_type_ids']))
  assert ds.is_regression and ds.labels.dtype == np.float32
  # Segment B exists and is typed 1 in every pair.
  assert all(1 in types for _, types in _rows(ds))


def test_chunking_is_seamless(minilm_tokenizer, monkeypatch):
  from codir_jax.data import tokenize as tokenize_lib

  texts = [f'sentence number {i} ' * (i % 5 + 1) for i in range(50)]
  whole = data.tokenize_texts(minilm_tokenizer, texts, max_len=32)
  monkeypatch.setattr(tokenize_lib, '_CHUNK', 7)
  chunked = data.tokenize_texts(minilm_tokenizer, texts, max_len=32)
  for x, y in zip(whole, chunked):
    np.testing.assert_array_equal(x, y)


def test_user_tokenizer_is_not_mutated(minilm_tokenizer):
  before = minilm_tokenizer.backend_tokenizer.truncation
  data.tokenize_texts(minilm_tokenizer, ['a b c d e f'], max_len=4)
  assert minilm_tokenizer.backend_tokenizer.truncation == before


def test_make_buckets():
  assert data.make_buckets(128) == (16, 32, 64, 128)
  assert data.make_buckets(100) == (16, 32, 64, 100)
  assert data.make_buckets(512, min_len=32) == (32, 64, 128, 256, 512)
  assert data.make_buckets(8) == (8,)
  assert data.bucket_length(1, (16, 32)) == 16
  assert data.bucket_length(16, (16, 32)) == 16
  assert data.bucket_length(17, (16, 32)) == 32
  with pytest.raises(ValueError, match='exceeds'):
    data.bucket_length(33, (16, 32))


@pytest.mark.parametrize('side', ['right', 'left'])
def test_roberta_style_template_and_truncation_side(side):
  tokenizers = pytest.importorskip('tokenizers')
  transformers = pytest.importorskip('transformers')
  words = 'a b c d e f g h i j'.split()
  vocab = {'<s>': 0, '<pad>': 1, '</s>': 2, '<unk>': 3}
  vocab.update({w: i + 4 for i, w in enumerate(words)})
  tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, '<unk>'))
  tk.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tk.post_processor = tokenizers.processors.RobertaProcessing(
      ('</s>', 2), ('<s>', 0)
  )
  tok = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tk,
      bos_token='<s>',
      eos_token='</s>',
      pad_token='<pad>',
      unk_token='<unk>',
      truncation_side=side,
  )
  a = ['a b c d e f g', 'a', 'j i h z']
  b = ['h i', 'b c d e f g h i j', 'a']
  s = data.GlueSplit('rte', 'dev', a, b, np.zeros(3, np.int32), True)
  ds = data.tokenize_split(s, tok, max_len=8)
  ref = tok(a, b, truncation=True, max_length=8)
  assert [r[0] for r in _rows(ds)] == ref['input_ids']
  assert ds.pad_id == 1 and not ds.type_ids.any()
  single = data.tokenize_texts(tok, a, max_len=5)
  ref = tok(a, truncation=True, max_length=5)['input_ids']
  assert [x.tolist() for x in np.split(single[0], single[2][1:-1])] == ref
