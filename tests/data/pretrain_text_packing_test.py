"""Streaming MLM batches: packing against an independent reference, masking."""

import numpy as np
import pytest

from tests.data import pretrain_corpus as corpus


@pytest.fixture(scope='module')
def roberta_tok():
  return corpus.tiny_roberta()


@pytest.fixture(params=['bert', 'roberta', 'byte_bpe'])
def tok(request, roberta_tok):
  if request.param == 'roberta':
    return roberta_tok
  if request.param == 'byte_bpe':
    return corpus.byte_bpe()
  return request.getfixturevalue('minilm_tokenizer')


@pytest.mark.parametrize('doc_format', ['line', 'blank_line'])
def test_packing_matches_reference(tmp_path, tok, doc_format):
  docs = corpus.random_docs(tok, 60)
  path = corpus.write(tmp_path / 'a.txt', docs, doc_format)
  batches = list(corpus.make_iterator(path, tok, doc_format=doc_format))
  ref = corpus.reference_rows(tok, docs, 16)
  rows = corpus.rows_by_id(batches)
  assert sorted(rows) == list(range(len(ref)))
  assert [rows[i] for i in range(len(ref))] == ref
  start, end = corpus.specials(tok)
  for b in batches:
    assert all(b[k].shape == (3, 16) for k in corpus.KEYS[:5])
    assert b['input_ids'].dtype == np.int32 and b['mlm_mask'].dtype == bool
    assert not b['token_type_ids'].any()
    for i in np.flatnonzero(b['valid']):
      n = int(b['attention_mask'][i].sum())
      assert (b['attention_mask'][i, :n] == 1).all()
      ids = corpus.unmasked(b)[i]
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
  path = corpus.write(tmp_path / 'a.txt', ['w1 w2', 'w3'])
  b = next(corpus.make_iterator(path, roberta_tok, mask_prob=0.01))
  np.testing.assert_array_equal(
      corpus.unmasked(b)[0, :7], [0, 6, 7, 2, 8, 2, 1]
  )  # <s> w1 w2 </s> w3 </s>
  assert b['attention_mask'][0].tolist()[:7] == [1] * 6 + [0]


@pytest.mark.parametrize('name', ['bert', 'byte_bpe'])
def test_long_line_is_cut_without_changing_tokens(tmp_path, name, request):
  if name == 'bert':
    tok = request.getfixturevalue('minilm_tokenizer')
  else:
    tok = corpus.byte_bpe()
  docs = (
      corpus.random_docs(tok, 5)
      + [' '.join(corpus.random_docs(tok, 300, seed=1))]
      + corpus.random_docs(tok, 5)
  )
  path = corpus.write(tmp_path / 'a.txt', docs)
  it = corpus.make_iterator(path, tok, max_len=32, chunk_bytes=100)
  rows = corpus.rows_by_id(list(it))
  assert [rows[i] for i in range(len(rows))] == corpus.reference_rows(
      tok, docs, 32
  )


# --- masking -----------------------------------------------------------------


def test_masking_statistics(tmp_path, minilm_tokenizer):
  tok = minilm_tokenizer
  docs = corpus.random_docs(tok, 1500, seed=3, lo=5, hi=150)
  path = corpus.write(tmp_path / 'a.txt', docs)
  batches = list(corpus.make_iterator(path, tok, batch_size=16, max_len=128))
  ids = np.concatenate([corpus.unmasked(b) for b in batches])
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
  path = corpus.write(
      tmp_path / 'a.txt', corpus.random_docs(roberta_tok, 400, hi=60)
  )
  batches = list(
      corpus.make_iterator(path, roberta_tok, max_len=64, mask_prob=0.4)
  )
  mask = np.concatenate([b['mlm_mask'] for b in batches])
  ids = np.concatenate([corpus.unmasked(b) for b in batches])
  maskable = (ids > 4) & np.concatenate(
      [b['attention_mask'] == 1 for b in batches]
  )
  assert abs(mask.sum() / maskable.sum() - 0.4) < 0.01
  assert not (mask & ~maskable).any()
  inp = np.concatenate([b['input_ids'] for b in batches])
  replaced = inp[mask & (inp != ids) & (inp != roberta_tok.mask_token_id)]
  assert len(replaced) > 300
  assert replaced.min() >= 5 and replaced.max() < len(roberta_tok)
