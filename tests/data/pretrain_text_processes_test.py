"""PretrainIterator on several processes: split tokenisation, same batches.

Each process is simulated by a thread that owns an iterator
(`process_index=p`, `process_count=P`) and shares a barrier all-gather with
the others, as real JAX processes share `host_exchange.allgather` (the last
test runs that one in two real JAX processes). The reference is one process
with the global batch size: concatenating the processes' rows in process
order must give its batches exactly (masks, shuffle, epoch ends, padding),
and a state saved by any process must resume all of them exactly.
"""

import collections
import functools
import itertools
import json
import threading
import types

import numpy as np
import pytest
import tokenizers

from codir_jax.data import pretrain_text
from tests.data import pretrain_corpus as corpus

B, T = 2, 12  # per-process batch size, row length


@pytest.fixture(scope='module')
def roberta_tok():
  return corpus.tiny_roberta()


class _ThreadExchange:
  """All-gather between threads: each gets every thread's arrays."""

  def __init__(self, n):
    self._barrier = threading.Barrier(n, timeout=60)
    self._slots = [None] * n
    self.calls = 0

  def __call__(self, p, arrays):
    self._slots[p] = [np.array(a) for a in arrays]
    self._barrier.wait()
    shares, self.calls = list(self._slots), self.calls + (p == 0)
    self._barrier.wait()
    return shares

  def abort(self):
    self._barrier.abort()


def _in_processes(n, fn):
  """[fn(p, exchange) for p < n], each in a thread named 'process-p'."""
  exchange, results, errors = _ThreadExchange(n), [None] * n, []

  def target(p):
    try:
      results[p] = fn(p, functools.partial(exchange, p))
    except BaseException as e:  # pylint: disable=broad-except
      errors.append(e)
      exchange.abort()  # the others leave the barrier instead of hanging

  threads = [
      threading.Thread(target=target, args=(p,), name=f'process-{p}')
      for p in range(n)
  ]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  if errors:
    raise errors[0]
  return results, exchange.calls


class _RecordingBackend:
  """A tokenizers.Tokenizer that logs every text it encodes."""

  def __init__(self, inner, log):
    self._inner, self._log = inner, log

  def no_truncation(self):
    self._inner.no_truncation()

  def no_padding(self):
    self._inner.no_padding()

  def encode_batch_fast(self, texts, add_special_tokens):
    self._log.extend(texts)
    return self._inner.encode_batch_fast(
        texts, add_special_tokens=add_special_tokens
    )

  encode_batch = encode_batch_fast


@pytest.fixture
def tokenised(monkeypatch):
  """{thread name: texts tokenised by the iterators built in that thread}."""
  log = collections.defaultdict(list)

  def from_str(text):
    name = threading.current_thread().name
    return _RecordingBackend(tokenizers.Tokenizer.from_str(text), log[name])

  fake = types.SimpleNamespace(
      Tokenizer=types.SimpleNamespace(from_str=from_str)
  )
  monkeypatch.setattr(pretrain_text, 'tokenizers', fake)
  return log


def _files(tmp_path, tok, doc_format='line'):
  """Three files of uneven length; the middle one has a single document.

  Some lines exceed 64 bytes (the smallest `chunk_bytes`), so are cut.
  """
  docs = corpus.random_docs(tok, 41, seed=11, hi=40)  # 81 rows of 12
  parts = [docs[:23], docs[23:24], docs[24:]]
  return [
      corpus.write(tmp_path / f'{i}.txt', part, doc_format)
      for i, part in enumerate(parts)
  ]


def _join(per_process, step):
  """The global batch `step`: the processes' rows in process order."""
  return {
      k: np.concatenate([batches[step][k] for batches in per_process])
      for k in corpus.KEYS
  }


CASES = {
    'line_2': {'n': 2},
    'blank_line_3': {'n': 3, 'doc_format': 'blank_line'},
    'shuffle_2': {'n': 2, 'shuffle_buffer': 8},
    'cut_lines_3': {'n': 3, 'chunk_bytes': 64},
    'drop_remainder_2': {'n': 2, 'drop_remainder': True},
}


def _kw(case):
  kw = {'max_len': T, 'num_epochs': 2, 'chunk_bytes': 200, **CASES[case]}
  return kw.pop('n'), kw


@pytest.mark.parametrize('case', list(CASES))
def test_processes_tokenise_disjoint_shares_and_agree(
    tmp_path, roberta_tok, tokenised, case
):
  n, kw = _kw(case)
  files = _files(tmp_path, roberta_tok, kw.get('doc_format', 'line'))
  ref = list(corpus.make_iterator(files, roberta_tok, batch_size=n * B, **kw))
  per_process, calls = _in_processes(
      n,
      lambda p, ex: list(
          corpus.make_iterator(
              files,
              roberta_tok,
              batch_size=B,
              process_index=p,
              process_count=n,
              exchange=ex,
              **kw,
          )
      ),
  )
  assert all(len(batches) == len(ref) for batches in per_process)
  corpus.assert_same([_join(per_process, s) for s in range(len(ref))], ref)
  # The padded last batch of both epochs (unless dropped).
  if not kw.get('drop_remainder'):
    assert sum(not b['valid'].all() for b in ref) == 2
  # Every text the single process tokenised was tokenised by exactly one of
  # the processes, each taking about 1/n of them.
  shares = [tokenised[f'process-{p}'] for p in range(n)]
  everything = tokenised['MainThread']
  assert calls > 5 and len(everything) >= 2 * 41  # two epochs
  assert sum(map(collections.Counter, shares), collections.Counter()) == (
      collections.Counter(everything)
  )
  for share in shares:
    assert abs(len(share) - len(everything) / n) <= calls


@pytest.mark.parametrize('case', ['line_2', 'shuffle_2', 'cut_lines_3'])
def test_resume_from_any_process_state(tmp_path, roberta_tok, case):
  n, kw = _kw(case)
  files = _files(tmp_path, roberta_tok)
  one = corpus.make_iterator(files, roberta_tok, batch_size=n * B, **kw)
  ref, ref_states = [], [one.get_state()]
  for batch in one:
    ref.append(batch)
    ref_states.append(one.get_state())

  def stop_and_resume(k, p, exchange):
    build = functools.partial(
        corpus.make_iterator,
        files,
        roberta_tok,
        batch_size=B,
        process_index=p,
        process_count=n,
        exchange=exchange,
    )
    it = build(**kw)
    for _ in range(k):
      next(it)
    state = json.loads(json.dumps(it.get_state()))
    fresh = build(**{**kw, 'num_epochs': 3})
    fresh.set_state(state)  # each its own state; they are equal (below)
    return state, list(itertools.islice(fresh, len(ref) - k))

  steps = sorted({0, 1, len(ref) // 2, len(ref) // 2 + 1, len(ref)})
  steps += [s for s, b in enumerate(ref) if not b['valid'].all()]  # epoch end
  for k in steps:
    out, _ = _in_processes(n, functools.partial(stop_and_resume, k))
    states = [json.dumps(s, sort_keys=True) for s, _ in out]
    assert set(states) == {json.dumps(ref_states[k], sort_keys=True)}
    tails = [batches for _, batches in out]
    corpus.assert_same([_join(tails, s) for s in range(len(ref) - k)], ref[k:])


def test_eval_stream_counts_every_row_once(tmp_path, roberta_tok):
  """As pretrain_run's eval batches: one epoch, more batches than it has."""
  files = _files(tmp_path, roberta_tok)
  kw = {'max_len': T, 'num_epochs': 1, 'seed': 7}
  ref = list(corpus.make_iterator(files, roberta_tok, batch_size=3 * B, **kw))
  per_process, _ = _in_processes(
      3,
      lambda p, ex: list(
          itertools.islice(
              corpus.make_iterator(
                  files,
                  roberta_tok,
                  batch_size=B,
                  process_index=p,
                  process_count=3,
                  exchange=ex,
                  **kw,
              ),
              1000,
          )
      ),
  )
  rows = corpus.rows_by_id(sum(per_process, []))  # asserts: no row twice
  assert rows == corpus.rows_by_id(ref)
  assert sorted(rows) == list(range(81))
  assert not ref[-1]['valid'].all()  # the last global batch is partial
