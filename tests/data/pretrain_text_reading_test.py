"""Streaming MLM batches: lazy bounded reads, file globs, errors."""

import pytest

from codir_jax.data import pretrain_text
from codir_jax.data import text_stream
from tests.data import pretrain_corpus as corpus


@pytest.fixture(scope='module')
def roberta_tok():
  return corpus.tiny_roberta()


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
  docs = corpus.random_docs(tok, 3000, seed=7)
  docs[100] = ' '.join(
      corpus.random_docs(tok, 100, seed=8)
  )  # one line of ~20 chunks
  corpus.write(path, docs)
  size = path.stat().st_size
  assert size > 100 * chunk
  log = []
  monkeypatch.setattr(
      text_stream,
      'open',
      lambda p, mode: _CountingFile(open(p, mode), log),
      raising=False,
  )
  it = corpus.make_iterator(
      str(path), tok, batch_size=2, max_len=32, chunk_bytes=chunk
  )
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
  good = corpus.write(tmp_path / 'a.txt', ['w1 w2 w3'])
  with pytest.raises(FileNotFoundError, match='missing.txt'):
    corpus.make_iterator([good, str(tmp_path / 'missing.txt')], roberta_tok)
  with pytest.raises(FileNotFoundError, match=r'nothing\*\.txt'):
    corpus.make_iterator(str(tmp_path / 'nothing*.txt'), roberta_tok)
  empty = tmp_path / 'empty.txt'
  empty.write_text('\n   \n\n')
  with pytest.raises(ValueError, match='Empty corpus'):
    corpus.make_iterator(str(empty), roberta_tok)
  with pytest.raises(ValueError, match='max_len must be >= 8'):
    corpus.make_iterator(good, roberta_tok, max_len=7)
  with pytest.raises(ValueError, match='no mask token'):
    corpus.make_iterator(good, corpus.tiny_roberta(with_mask=False))
  with pytest.raises(ValueError, match='doc_format'):
    corpus.make_iterator(good, roberta_tok, doc_format='paragraph')
  with pytest.raises(ValueError, match='mask_prob'):
    corpus.make_iterator(good, roberta_tok, mask_prob=0.0)
  with pytest.raises(ValueError, match='multiple of the global batch'):
    corpus.make_iterator(good, roberta_tok, shuffle_buffer=4, batch_size=3)
  with pytest.raises(ValueError, match='no batch of global size'):
    next(corpus.make_iterator(good, roberta_tok, drop_remainder=True))
  state = corpus.make_iterator(good, roberta_tok).get_state()
  with pytest.raises(ValueError, match='seed=0'):
    corpus.make_iterator(good, roberta_tok, seed=1).set_state(state)
  with pytest.raises(ValueError, match='chunk_bytes'):
    corpus.make_iterator(good, roberta_tok, chunk_bytes=100).set_state(state)


def test_globs_expand_sorted(tmp_path, roberta_tok):
  for name, docs in [('b.txt', ['w2']), ('a.txt', ['w1']), ('c.md', ['w9'])]:
    corpus.write(tmp_path / name, docs)
  assert [
      p.rsplit('/', 1)[1]
      for p in pretrain_text.resolve_files(str(tmp_path / '*.txt'))
  ] == ['a.txt', 'b.txt']
  b = next(
      corpus.make_iterator(str(tmp_path / '*.txt'), roberta_tok, mask_prob=0.01)
  )
  assert corpus.unmasked(b)[0, :5].tolist() == [0, 6, 2, 7, 2]
