"""Small corpora, tokenizers and references for the PretrainIterator tests."""

import numpy as np
import pytest

from codir_jax.data import pretrain_text

KEYS = (
    'input_ids',
    'attention_mask',
    'token_type_ids',
    'mlm_labels',
    'mlm_mask',
    'example_ids',
    'valid',
)


ROBERTA_ROLES = dict(
    bos_token='<s>', pad_token='<pad>', eos_token='</s>', unk_token='<unk>'
)


def _fast(tok, **roles):
  transformers = pytest.importorskip('transformers')
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **roles)


def word_level(words, **roles):
  """Whitespace-split WordLevel fast tokenizer: the special tokens of
  `roles` (e.g. pad_token='[PAD]') get ids 0.. in order, then `words`."""
  tokenizers = pytest.importorskip('tokenizers')
  specials = list(dict.fromkeys(roles.values()))
  vocab = {w: i for i, w in enumerate(specials + list(words))}
  tok = tokenizers.Tokenizer(
      tokenizers.models.WordLevel(vocab, unk_token=roles['unk_token'])
  )
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  return _fast(tok, **roles)


def tiny_roberta(with_mask=True):
  """WordLevel tokenizer with RoBERTa's specials: <s>=0 <pad>=1 </s>=2."""
  mask = {'mask_token': '<mask>'} if with_mask else {}
  return word_level([f'w{i}' for i in range(300)], **ROBERTA_ROLES, **mask)


def byte_bpe():
  """A byte-level BPE like RoBERTa's (spaces are part of tokens)."""
  tokenizers = pytest.importorskip('tokenizers')
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  byte_level = tokenizers.pre_tokenizers.ByteLevel
  tok.pre_tokenizer = byte_level(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  rng = np.random.default_rng(0)
  tok.train_from_iterator(
      [' '.join(f'w{i}' for i in rng.integers(0, 300, 20)) for _ in range(200)],
      tokenizers.trainers.BpeTrainer(
          vocab_size=400,
          show_progress=False,
          special_tokens=['<s>', '<pad>', '</s>', '<unk>', '<mask>'],
          initial_alphabet=byte_level.alphabet(),
      ),
  )
  return _fast(tok, **ROBERTA_ROLES, mask_token='<mask>')


def _words(tokenizer):
  """Whole words of the vocabulary (each tokenises to itself)."""
  vocab = tokenizer.get_vocab()
  if '<mask>' in vocab:  # the test's RoBERTa-style tokenizers
    return [f'w{i}' for i in range(300)]
  words = sorted(
      w
      for w in vocab
      if w.isalnum()
      and w.isascii()
      and len(w) >= 2
      and w not in tokenizer.all_special_tokens
  )
  return words[:2000]


def random_docs(tokenizer, n, seed=0, lo=1, hi=30):
  rng = np.random.default_rng(seed)
  words = _words(tokenizer)
  return [' '.join(rng.choice(words, rng.integers(lo, hi))) for _ in range(n)]


def write(path, docs, doc_format='line'):
  """Writes docs; blank_line docs are split over lines, with stray blanks."""
  with open(path, 'w', encoding='utf-8') as f:
    for i, doc in enumerate(docs):
      if doc_format == 'line':
        f.write(
            ('  ' if i % 3 == 0 else '')
            + doc
            + ('\n\n' if i % 4 == 0 else '\n')
        )
      else:
        words = doc.split(' ')
        lines = [' '.join(words[j : j + 4]) for j in range(0, len(words), 4)]
        f.write('\n'.join(lines) + ('\n\n\n' if i % 5 == 0 else '\n\n'))
  return str(path)


def specials(tokenizer):
  start = tokenizer.cls_token_id
  end = tokenizer.sep_token_id
  if start is None:
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
  return start, end


def reference_rows(tokenizer, docs, max_len):
  """Independent packing: transformers call, concatenate, cut, add specials."""
  start, end = specials(tokenizer)
  stream = []
  for i, ids in enumerate(
      tokenizer(docs, add_special_tokens=False)['input_ids']
  ):
    stream += ([end] if i else []) + ids
  c = max_len - 2
  return [[start] + stream[i : i + c] + [end] for i in range(0, len(stream), c)]


def unmasked(batch):
  return np.where(batch['mlm_mask'], batch['mlm_labels'], batch['input_ids'])


def rows_by_id(batches):
  """{example_id: unmasked ids without padding} over valid rows."""
  rows = {}
  for b in batches:
    ids = unmasked(b)
    for i in np.flatnonzero(b['valid']):
      row = int(b['example_ids'][i])
      assert row not in rows
      rows[row] = ids[i][b['attention_mask'][i] == 1].tolist()
  return rows


def assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for key in KEYS:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def make_iterator(files, tokenizer, **kw):
  kw = {'batch_size': 3, 'max_len': 16, 'num_epochs': 1, **kw}
  return pretrain_text.PretrainIterator(files, tokenizer, **kw)
