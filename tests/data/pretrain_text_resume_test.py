"""Streaming MLM batches: determinism, resume, process slices, shuffling."""

import itertools
import json

import numpy as np
import pytest

from tests.data import pretrain_corpus as corpus


@pytest.fixture(scope='module')
def roberta_tok():
  return corpus.tiny_roberta()


def test_determinism_seeds_and_epochs(tmp_path, roberta_tok):
  path = corpus.write(tmp_path / 'a.txt', corpus.random_docs(roberta_tok, 80))
  a = list(corpus.make_iterator(path, roberta_tok, seed=1, num_epochs=2))
  corpus.assert_same(
      a, list(corpus.make_iterator(path, roberta_tok, seed=1, num_epochs=2))
  )
  b = list(corpus.make_iterator(path, roberta_tok, seed=2, num_epochs=2))
  assert len(a) == len(b) and len(a) % 2 == 0
  for x, y in zip(a, b):
    np.testing.assert_array_equal(corpus.unmasked(x), corpus.unmasked(y))
  assert any((x['mlm_mask'] != y['mlm_mask']).any() for x, y in zip(a, b))
  # Epoch 2 has the same rows, masked afresh.
  half = len(a) // 2
  for x, y in zip(a[:half], a[half:]):
    np.testing.assert_array_equal(corpus.unmasked(x), corpus.unmasked(y))
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
  docs = corpus.random_docs(
      roberta_tok, 30, seed=5, hi=80 if case == 'long_lines' else 25
  )
  files = [
      corpus.write(tmp_path / 'a.txt', docs[:17], fmt),
      corpus.write(tmp_path / 'b.txt', docs[17:], fmt),
  ]
  ref = list(corpus.make_iterator(files, roberta_tok, **kw))
  assert len(ref) > 10
  positions = []
  for k in range(len(ref) + 1):
    it = corpus.make_iterator(files, roberta_tok, **kw)
    for _ in range(k):
      next(it)
    state = json.loads(json.dumps(it.get_state()))
    positions.append(state['position'])
    corpus.assert_same(
        list(it), ref[k:]
    )  # get_state does not move the iterator
    fresh = corpus.make_iterator(files, roberta_tok, **{**kw, 'num_epochs': 3})
    fresh.set_state(state)
    corpus.assert_same(list(itertools.islice(fresh, len(ref) - k)), ref[k:])
  # The states cover both files, rows that start inside a segment, and
  # (with long lines) positions inside a cut line.
  assert {p['file'] for p in positions} >= {0, 1}
  assert any(p['skip'] > 0 for p in positions)
  if case == 'long_lines':
    assert any(p['mid_line'] for p in positions)


def test_shards_are_disjoint_and_cover(tmp_path, roberta_tok):
  path = corpus.write(
      tmp_path / 'a.txt', corpus.random_docs(roberta_tok, 69)
  )  # 76 rows
  whole = list(corpus.make_iterator(path, roberta_tok, batch_size=6))
  shards = [
      list(
          corpus.make_iterator(
              path, roberta_tok, batch_size=2, process_index=p, process_count=3
          )
      )
      for p in range(3)
  ]
  assert all(len(s) == len(whole) for s in shards)
  for step, batch in enumerate(whole):
    joined = {
        k: np.concatenate([s[step][k] for s in shards]) for k in corpus.KEYS
    }
    corpus.assert_same([joined], [batch])
  ids = [set(corpus.rows_by_id(s)) for s in shards]
  assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
  assert set.union(*ids) == set(corpus.rows_by_id(whole))
  assert not whole[-1]['valid'].all()  # the padded tail is really exercised


def test_shuffle_buffer_permutes_within_windows(tmp_path, roberta_tok):
  path = corpus.write(tmp_path / 'a.txt', corpus.random_docs(roberta_tok, 100))
  plain = corpus.rows_by_id(list(corpus.make_iterator(path, roberta_tok)))
  batches = list(corpus.make_iterator(path, roberta_tok, shuffle_buffer=9))
  order = np.concatenate([b['example_ids'][b['valid']] for b in batches])
  assert corpus.rows_by_id(batches) == plain
  assert (order != np.arange(len(order))).any()
  windows = order[: len(order) // 9 * 9].reshape(-1, 9)
  np.testing.assert_array_equal(
      np.sort(windows, axis=1), np.arange(windows.size).reshape(-1, 9)
  )
