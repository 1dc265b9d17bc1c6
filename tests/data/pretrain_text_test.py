"""Streaming MLM pre-training batches: packing, masking, resume, sharding."""

import itertools
import json

import numpy as np
import pytest

from codir_jax.data import pretrain_text
from codir_jax.data import text_stream

KEYS = (
    'input_ids',
    'attention_mask',
    'token_type_ids',
    'mlm_labels',
    'mlm_mask',
    'example_ids',
    'valid',
)


def _tiny_roberta(with_mask=True):
  """WordLevel tokenizer with RoBERTa's specials: <s>=0 <pad>=1 </s>=2."""
  tokenizers = pytest.importorskip('tokenizers')
  transformers = pytest.importorskip('transformers')
  specials = ['<s>', '<pad>', '</s>', '<unk>'] + ['<mask>'] * with_mask
  vocab = {w: i for i, w in enumerate(specials)}
  vocab.update({f'w{i}': len(specials) + i for i in range(300)})
  tok = tokenizers.Tokenizer(
      tokenizers.models.WordLevel(vocab, unk_token='<unk>')
  )
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok,
      bos_token='<s>',
      eos_token='</s>',
      pad_token='<pad>',
      unk_token='<unk>',
      **({'mask_token': '<mask>'} if with_mask else {}),
  )


def _byte_bpe():
  """A byte-level BPE like RoBERTa's (spaces are part of tokens)."""
  tokenizers = pytest.importorskip('tokenizers')
  transformers = pytest.importorskip('transformers')
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
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok,
      bos_token='<s>',
      eos_token='</s>',
      pad_token='<pad>',
      unk_token='<unk>',
      mask_token='<mask>',
  )


@pytest.fixture(scope='module')
def roberta_tok():
  return _tiny_roberta()


@pytest.fixture(params=['bert', 'roberta', 'byte_bpe'])
def tok(request, roberta_tok):
  if request.param == 'roberta':
    return roberta_tok
  if request.param == 'byte_bpe':
    return _byte_bpe()
  return request.getfixturevalue('minilm_tokenizer')


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


def _docs(tokenizer, n, seed=0, lo=1, hi=30):
  rng = np.random.default_rng(seed)
  words = _words(tokenizer)
  return [' '.join(rng.choice(words, rng.integers(lo, hi))) for _ in range(n)]


def _write(path, docs, doc_format='line'):
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


def _specials(tokenizer):
  start = tokenizer.cls_token_id
  end = tokenizer.sep_token_id
  if start is None:
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
  return start, end


def _reference_rows(tokenizer, docs, max_len):
  """Independent packing: transformers call, concatenate, cut, add specials."""
  start, end = _specials(tokenizer)
  stream = []
  for i, ids in enumerate(
      tokenizer(docs, add_special_tokens=False)['input_ids']
  ):
    stream += ([end] if i else []) + ids
  c = max_len - 2
  return [[start] + stream[i : i + c] + [end] for i in range(0, len(stream), c)]


def _unmasked(batch):
  return np.where(batch['mlm_mask'], batch['mlm_labels'], batch['input_ids'])


def _rows_by_id(batches):
  """{example_id: unmasked ids without padding} over valid rows."""
  rows = {}
  for b in batches:
    ids = _unmasked(b)
    for i in np.flatnonzero(b['valid']):
      row = int(b['example_ids'][i])
      assert row not in rows
      rows[row] = ids[i][b['attention_mask'][i] == 1].tolist()
  return rows


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for key in KEYS:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def _it(files, tokenizer, **kw):
  kw = {'batch_size': 3, 'max_len': 16, 'num_epochs': 1, **kw}
  return pretrain_text.PretrainIterator(files, tokenizer, **kw)


# --- packing -----------------------------------------------------------------


@pytest.mark.parametrize('doc_format', ['line', 'blank_line'])
def test_packing_matches_reference(tmp_path, tok, doc_format):
  docs = _docs(tok, 60)
  path = _write(tmp_path / 'a.txt', docs, doc_format)
  batches = list(_it(path, tok, doc_format=doc_format))
  ref = _reference_rows(tok, docs, 16)
  rows = _rows_by_id(batches)
  assert sorted(rows) == list(range(len(ref)))
  assert [rows[i] for i in range(len(ref))] == ref
  start, end = _specials(tok)
  for b in batches:
    assert all(b[k].shape == (3, 16) for k in KEYS[:5])
    assert b['input_ids'].dtype == np.int32 and b['mlm_mask'].dtype == bool
    assert not b['token_type_ids'].any()
    for i in np.flatnonzero(b['valid']):
      n = int(b['attention_mask'][i].sum())
      assert (b['attention_mask'][i, :n] == 1).all()
      ids = _unmasked(b)[i]
      assert ids[0] == start and ids[n - 1] == end
      assert (ids[n:] == tok.pad_token_id).all()
  # Only the last row is short; invalid rows only pad the last batch.
  lens = [len(rows[i]) for i in range(len(ref))]
  assert set(lens[:-1]) == {16} and lens[-1] <= 16
  assert all(b['valid'].all() for b in batches[:-1])
  last = batches[-1]
  k = int(last['valid'].sum())
  assert (last['example_ids'][k:] == -1).all()
  assert (last['attention_mask'][k:].sum(1) == 1).all()
  assert not last['mlm_mask'][k:].any()


def test_roberta_special_ids(tmp_path, roberta_tok):
  path = _write(tmp_path / 'a.txt', ['w1 w2', 'w3'])
  b = next(_it(path, roberta_tok, mask_prob=0.01))
  np.testing.assert_array_equal(
      _unmasked(b)[0, :7], [0, 6, 7, 2, 8, 2, 1]
  )  # <s> w1 w2 </s> w3 </s>
  assert b['attention_mask'][0].tolist()[:7] == [1] * 6 + [0]


@pytest.mark.parametrize('name', ['bert', 'byte_bpe'])
def test_long_line_is_cut_without_changing_tokens(tmp_path, name, request):
  if name == 'bert':
    tok = request.getfixturevalue('minilm_tokenizer')
  else:
    tok = _byte_bpe()
  docs = _docs(tok, 5) + [' '.join(_docs(tok, 300, seed=1))] + _docs(tok, 5)
  path = _write(tmp_path / 'a.txt', docs)
  it = _it(path, tok, max_len=32, chunk_bytes=100)
  rows = _rows_by_id(list(it))
  assert [rows[i] for i in range(len(rows))] == _reference_rows(tok, docs, 32)


# --- masking -----------------------------------------------------------------


def test_masking_statistics(tmp_path, minilm_tokenizer):
  tok = minilm_tokenizer
  docs = _docs(tok, 1500, seed=3, lo=5, hi=150)
  path = _write(tmp_path / 'a.txt', docs)
  batches = list(_it(path, tok, batch_size=16, max_len=128))
  ids = np.concatenate([_unmasked(b) for b in batches])
  inp = np.concatenate([b['input_ids'] for b in batches])
  labels = np.concatenate([b['mlm_labels'] for b in batches])
  mask = np.concatenate([b['mlm_mask'] for b in batches])
  att = np.concatenate([b['attention_mask'] for b in batches]) == 1
  valid = np.concatenate([b['valid'] for b in batches])
  special = np.isin(ids, tok.all_special_ids)
  maskable = att & ~special & valid[:, None]
  assert maskable.sum() >= 100_000
  assert not (mask & ~maskable).any()  # no special, pad or padding row
  np.testing.assert_array_equal(labels[mask], ids[mask])
  assert (labels[~mask] == -100).all()
  np.testing.assert_array_equal(inp[~mask], ids[~mask])
  rate = mask.sum() / maskable.sum()
  to_mask = (inp[mask] == tok.mask_token_id).mean()
  kept = (inp[mask] == ids[mask]).mean()
  to_random = 1 - to_mask - kept
  print(
      f'rate={rate:.4f} mask={to_mask:.4f} random={to_random:.4f}'
      f' kept={kept:.4f} over {maskable.sum()} maskable tokens'
  )
  assert abs(rate - 0.15) < 0.005
  assert abs(to_mask - 0.8) < 0.01
  assert abs(to_random - 0.1) < 0.01
  assert abs(kept - 0.1) < 0.01
  replaced = inp[mask][
      (inp[mask] != ids[mask]) & (inp[mask] != tok.mask_token_id)
  ]
  assert not np.isin(replaced, tok.all_special_ids).any()
  assert len(np.unique(replaced)) > 500  # uniform over the whole vocabulary
  # Exact count per full row: floor or ceil of p * m.
  per_row = mask.sum(1)[valid]
  expected = 0.15 * maskable.sum(1)[valid]
  assert (np.abs(per_row - expected) < 1).all()


def test_mask_prob_argument(tmp_path, roberta_tok):
  path = _write(tmp_path / 'a.txt', _docs(roberta_tok, 400, hi=60))
  batches = list(_it(path, roberta_tok, max_len=64, mask_prob=0.4))
  mask = np.concatenate([b['mlm_mask'] for b in batches])
  ids = np.concatenate([_unmasked(b) for b in batches])
  maskable = (ids > 4) & np.concatenate(
      [b['attention_mask'] == 1 for b in batches]
  )
  assert abs(mask.sum() / maskable.sum() - 0.4) < 0.01
  assert not (mask & ~maskable).any()
  inp = np.concatenate([b['input_ids'] for b in batches])
  replaced = inp[mask & (inp != ids) & (inp != roberta_tok.mask_token_id)]
  assert len(replaced) > 300
  assert replaced.min() >= 5 and replaced.max() < len(roberta_tok)


# --- determinism, resume, sharding, shuffling --------------------------------


def test_determinism_seeds_and_epochs(tmp_path, roberta_tok):
  path = _write(tmp_path / 'a.txt', _docs(roberta_tok, 80))
  a = list(_it(path, roberta_tok, seed=1, num_epochs=2))
  _assert_same(a, list(_it(path, roberta_tok, seed=1, num_epochs=2)))
  b = list(_it(path, roberta_tok, seed=2, num_epochs=2))
  assert len(a) == len(b) and len(a) % 2 == 0
  for x, y in zip(a, b):
    np.testing.assert_array_equal(_unmasked(x), _unmasked(y))
  assert any((x['mlm_mask'] != y['mlm_mask']).any() for x, y in zip(a, b))
  # Epoch 2 has the same rows, masked afresh.
  half = len(a) // 2
  for x, y in zip(a[:half], a[half:]):
    np.testing.assert_array_equal(_unmasked(x), _unmasked(y))
    np.testing.assert_array_equal(x['example_ids'], y['example_ids'])
  assert any(
      (x['mlm_mask'] != y['mlm_mask']).any() for x, y in zip(a[:half], a[half:])
  )


RESUME_CASES = {
    'plain': {},
    'long_lines': {'chunk_bytes': 64},
    'blank_line': {'doc_format': 'blank_line'},
    'shuffle': {'shuffle_buffer': 12},
    'process_1_of_2': {'process_index': 1, 'process_count': 2},
    'drop_remainder': {'drop_remainder': True},
}


@pytest.mark.parametrize('case', list(RESUME_CASES))
def test_resume_gives_identical_batches(tmp_path, roberta_tok, case):
  kw = {'num_epochs': 2, 'max_len': 12, 'batch_size': 2, **RESUME_CASES[case]}
  fmt = kw.get('doc_format', 'line')
  docs = _docs(roberta_tok, 30, seed=5, hi=80 if case == 'long_lines' else 25)
  files = [
      _write(tmp_path / 'a.txt', docs[:17], fmt),
      _write(tmp_path / 'b.txt', docs[17:], fmt),
  ]
  ref = list(_it(files, roberta_tok, **kw))
  assert len(ref) > 10
  positions = []
  for k in range(len(ref) + 1):
    it = _it(files, roberta_tok, **kw)
    for _ in range(k):
      next(it)
    state = json.loads(json.dumps(it.get_state()))
    positions.append(state['position'])
    _assert_same(list(it), ref[k:])  # get_state does not move the iterator
    fresh = _it(files, roberta_tok, **{**kw, 'num_epochs': 3})
    fresh.set_state(state)
    _assert_same(list(itertools.islice(fresh, len(ref) - k)), ref[k:])
  # The states cover both files, rows that start inside a segment, and
  # (with long lines) positions inside a cut line.
  assert {p['file'] for p in positions} >= {0, 1}
  assert any(p['skip'] > 0 for p in positions)
  if case == 'long_lines':
    assert any(p['mid_line'] for p in positions)


def test_shards_are_disjoint_and_cover(tmp_path, roberta_tok):
  path = _write(tmp_path / 'a.txt', _docs(roberta_tok, 69))  # 76 rows
  whole = list(_it(path, roberta_tok, batch_size=6))
  shards = [
      list(
          _it(path, roberta_tok, batch_size=2, process_index=p, process_count=3)
      )
      for p in range(3)
  ]
  assert all(len(s) == len(whole) for s in shards)
  for step, batch in enumerate(whole):
    joined = {k: np.concatenate([s[step][k] for s in shards]) for k in KEYS}
    _assert_same([joined], [batch])
  ids = [set(_rows_by_id(s)) for s in shards]
  assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
  assert set.union(*ids) == set(_rows_by_id(whole))
  assert not whole[-1]['valid'].all()  # the padded tail is really exercised


def test_shuffle_buffer_permutes_within_windows(tmp_path, roberta_tok):
  path = _write(tmp_path / 'a.txt', _docs(roberta_tok, 100))
  plain = _rows_by_id(list(_it(path, roberta_tok)))
  batches = list(_it(path, roberta_tok, shuffle_buffer=9))
  order = np.concatenate([b['example_ids'][b['valid']] for b in batches])
  assert _rows_by_id(batches) == plain
  assert (order != np.arange(len(order))).any()
  windows = order[: len(order) // 9 * 9].reshape(-1, 9)
  np.testing.assert_array_equal(
      np.sort(windows, axis=1), np.arange(windows.size).reshape(-1, 9)
  )


# --- streaming ---------------------------------------------------------------


class _CountingFile:
  """Wraps a binary file and logs the size of every read."""

  def __init__(self, f, log):
    self._f, self._log = f, log

  def readline(self, size=-1):
    line = self._f.readline(size)
    self._log.append(len(line))
    return line

  def read(self, size=-1):
    data = self._f.read(size)
    self._log.append(len(data))
    return data

  def seek(self, *args):
    return self._f.seek(*args)

  def close(self):
    self._f.close()


def test_reads_are_lazy_and_bounded(tmp_path, minilm_tokenizer, monkeypatch):
  tok, chunk = minilm_tokenizer, 512
  path = tmp_path / 'big.txt'
  docs = _docs(tok, 3000, seed=7)
  docs[100] = ' '.join(_docs(tok, 100, seed=8))  # one line of ~20 chunks
  _write(path, docs)
  size = path.stat().st_size
  assert size > 100 * chunk
  log = []
  monkeypatch.setattr(
      text_stream,
      'open',
      lambda p, mode: _CountingFile(open(p, mode), log),
      raising=False,
  )
  it = _it(str(path), tok, batch_size=2, max_len=32, chunk_bytes=chunk)
  next(it)
  assert 0 < sum(log) <= 3 * chunk  # the first batch reads about one chunk
  for _ in it:
    pass
  assert max(log) <= chunk
  # Besides the first chunk (peeked at construction) only the tails of cut
  # lines are read twice.
  assert size <= sum(log) <= size + 4 * chunk
  assert 0 < it._stream.max_pending_tokens <= 2 * chunk


# --- errors ------------------------------------------------------------------


def test_errors(tmp_path, roberta_tok):
  good = _write(tmp_path / 'a.txt', ['w1 w2 w3'])
  with pytest.raises(FileNotFoundError, match='missing.txt'):
    _it([good, str(tmp_path / 'missing.txt')], roberta_tok)
  with pytest.raises(FileNotFoundError, match=r'nothing\*\.txt'):
    _it(str(tmp_path / 'nothing*.txt'), roberta_tok)
  empty = tmp_path / 'empty.txt'
  empty.write_text('\n   \n\n')
  with pytest.raises(ValueError, match='Empty corpus'):
    _it(str(empty), roberta_tok)
  with pytest.raises(ValueError, match='max_len must be >= 8'):
    _it(good, roberta_tok, max_len=7)
  with pytest.raises(ValueError, match='no mask token'):
    _it(good, _tiny_roberta(with_mask=False))
  with pytest.raises(ValueError, match='doc_format'):
    _it(good, roberta_tok, doc_format='paragraph')
  with pytest.raises(ValueError, match='mask_prob'):
    _it(good, roberta_tok, mask_prob=0.0)
  with pytest.raises(ValueError, match='multiple of the global batch'):
    _it(good, roberta_tok, shuffle_buffer=4, batch_size=3)
  with pytest.raises(ValueError, match='no batch of global size'):
    next(_it(good, roberta_tok, drop_remainder=True))
  state = _it(good, roberta_tok).get_state()
  with pytest.raises(ValueError, match='seed=0'):
    _it(good, roberta_tok, seed=1).set_state(state)
  with pytest.raises(ValueError, match='chunk_bytes'):
    _it(good, roberta_tok, chunk_bytes=100).set_state(state)


def test_globs_expand_sorted(tmp_path, roberta_tok):
  for name, docs in [('b.txt', ['w2']), ('a.txt', ['w1']), ('c.md', ['w9'])]:
    _write(tmp_path / name, docs)
  assert [
      p.rsplit('/', 1)[1]
      for p in pretrain_text.resolve_files(str(tmp_path / '*.txt'))
  ] == ['a.txt', 'b.txt']
  b = next(_it(str(tmp_path / '*.txt'), roberta_tok, mask_prob=0.01))
  assert _unmasked(b)[0, :5].tolist() == [0, 6, 2, 7, 2]
