"""Streaming masked-LM batches from raw text files (CoDIR-Pre, issue 6).

Reading and tokenising: `text_stream.py`; masking: `mlm_masking.py`.

Packing (RoBERTa FULL-SENTENCES). An epoch is one token stream: the
documents in order with the end token ([SEP] / </s>) between consecutive
documents. Row r of the epoch is `[start] + stream[r*C:(r+1)*C] + [end]`
with `C = max_len - 2` and start/end = cls/sep ids, else bos/eos ids; the
last row of an epoch may be shorter and is padded with the pad id
(attention_mask 0). A row may therefore hold several documents, or begin
right after a document with its separator.

Batches and sharding. Global batch s of an epoch is rows
`[s*G, (s+1)*G)`, `G = batch_size * process_count`, and process p takes
rows `[p*B, (p+1)*B)` of it (as `pipeline.BatchIterator`). The last global
batch of an epoch is padded with invalid rows (`valid` False), or dropped
with `drop_remainder=True`. With `shuffle_buffer=W` (a multiple of G;
default 0 = off), the rows of each window of W consecutive rows are permuted
by `default_rng([seed, 1, epoch, window])`; memory grows by W rows.

Several processes. Rows are cut from one packed stream, so where a row
starts depends on the token count of every document before it: a process
cannot find its rows from a private subset of the corpus. With `exchange`
(an all-gather across processes, `host_exchange.allgather` under JAX),
process p tokenises only segments p, p + P, ... of each chunk and receives
the other ids (`text_stream.SegmentEncoder`): tokenisation is split P ways,
every process holds the whole token stream, and the rows, masks, shuffle,
epoch ends, padding and `get_state()` are exactly those of one process with
batch size G. Every process reads every byte (one sequential scan; the
UTF-8 check at construction also scans every file: reading and parsing
cost about 2% of tokenising with a BERT WordPiece tokenizer) and receives 4
bytes per token of the corpus. The exchange runs inside `next()` (and the
constructor) at the same calls on every process, so every process must
iterate in step. Without `exchange` each process tokenises the whole corpus
(same batches).

State. `get_state()` is the epoch, the step and the stream position where
the current window (the next global batch without shuffling) starts: file
index, byte offset of the segment that holds its first token, the number of
tokens of that segment's contribution to skip, and three parser flags.
`set_state()` re-reads from there, so the batches that follow are
identical. The state is the same on every process, so the one copy a
checkpoint stores (written by process 0) resumes every process exactly.

Batch (all numpy; B = batch_size, T = max_len):
  input_ids [B, T] int32 (masked), attention_mask [B, T] int32,
  token_type_ids [B, T] int32 (zeros), mlm_labels [B, T] int32 (original id
  at masked positions, -100 elsewhere), mlm_mask [B, T] bool,
  example_ids [B] int32 (row index in the epoch, -1 on padding rows),
  valid [B] bool.
Padding rows have input_ids = pad id and attention_mask 1 on position 0 only
(as `pipeline.py`), no masked position.
"""

import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tokenizers

from codir_jax.data import utf8
from codir_jax.data.mlm_masking import IGNORE_INDEX
from codir_jax.data.mlm_masking import mask_tokens
from codir_jax.data.mlm_masking import special_ids
from codir_jax.data.text_stream import DEFAULT_CHUNK_BYTES
from codir_jax.data.text_stream import DOC_FORMATS
from codir_jax.data.text_stream import Exchange
from codir_jax.data.text_stream import MIN_CHUNK_BYTES
from codir_jax.data.text_stream import SegmentEncoder
from codir_jax.data.text_stream import StreamPosition
from codir_jax.data.text_stream import TextReader
from codir_jax.data.text_stream import TokenStream
from codir_jax.data.text_stream import resolve_files

Batch = dict[str, np.ndarray]
MIN_MAX_LEN = 8
_MASK_TAG, _SHUFFLE_TAG = 0, 1
__all__ = [
    'Batch',
    'IGNORE_INDEX',
    'PretrainIterator',
    'StreamPosition',
    'mask_tokens',
    'resolve_files',
]


class PretrainIterator(Iterator[Batch]):
  """Masked-LM batches streamed from raw text, resumable and sharded."""

  def __init__(
      self,
      paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
      tokenizer: Any,
      *,
      batch_size: int,
      max_len: int = 128,
      doc_format: str = 'line',
      mask_prob: float = 0.15,
      seed: int = 0,
      num_epochs: int | None = None,
      drop_remainder: bool = False,
      shuffle_buffer: int = 0,
      process_index: int = 0,
      process_count: int = 1,
      chunk_bytes: int = DEFAULT_CHUNK_BYTES,
      exchange: Exchange | None = None,
  ):
    """Builds the iterator at epoch 0, step 0 (tokenises one chunk to check).

    Args:
      paths: a text file, a glob, or a sequence of them (files read in order).
      tokenizer: a transformers fast tokenizer with a mask and a pad token.
      batch_size: rows per batch on this process.
      max_len: row length T, special tokens included (>= 8).
      doc_format: 'line' (a document per line) or 'blank_line' (documents
        separated by blank lines).
      mask_prob: expected fraction of maskable tokens chosen for prediction.
      seed: masking (and shuffling) seed, >= 0.
      num_epochs: stop after this many passes; None = forever.
      drop_remainder: drop the last partial global batch of each epoch.
      shuffle_buffer: rows shuffled together, a multiple of the global batch
        size; 0 = keep the corpus order.
      process_index: this process (`jax.process_index()`).
      process_count: number of processes (`jax.process_count()`).
      chunk_bytes: bytes of text read and tokenised at a time (>= 64).
      exchange: all-gather across the `process_count` processes (this
        process's int32 arrays -> every process's lists, in process order);
        with it each process tokenises 1/process_count of the corpus. None:
        each tokenises all of it.
    """
    if doc_format not in DOC_FORMATS:
      raise ValueError(
          f'doc_format must be one of {DOC_FORMATS}, got {doc_format!r}'
      )
    if max_len < MIN_MAX_LEN:
      raise ValueError(f'max_len must be >= {MIN_MAX_LEN}, got {max_len}')
    if not 0.0 < mask_prob < 1.0:
      raise ValueError(f'mask_prob must be in (0, 1), got {mask_prob}')
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    if not 0 <= process_index < process_count:
      raise ValueError(f'process {process_index} of {process_count}')
    if seed < 0:
      raise ValueError(f'seed must be >= 0, got {seed}')
    if chunk_bytes < MIN_CHUNK_BYTES:
      raise ValueError(f'chunk_bytes must be >= {MIN_CHUNK_BYTES}')
    if not getattr(tokenizer, 'is_fast', False):
      raise TypeError(
          'PretrainIterator needs a transformers *fast* tokenizer,'
          f' got {type(tokenizer).__name__}'
      )
    self._start_id, self._end_id, self._pad_id, self._mask_id = special_ids(
        tokenizer
    )
    self._global_batch = batch_size * process_count
    if shuffle_buffer < 0 or shuffle_buffer % self._global_batch:
      raise ValueError(
          f'shuffle_buffer {shuffle_buffer} is not a multiple of'
          f' the global batch size {self._global_batch}'
      )
    self.files = resolve_files(paths)
    for path in self.files:
      utf8.check_file(path)
    self._special = np.asarray(
        sorted(
            set(tokenizer.all_special_ids)
            | {self._start_id, self._end_id, self._pad_id, self._mask_id}
        ),
        np.int32,
    )
    self._random_ids = np.setdiff1d(
        np.arange(len(tokenizer), dtype=np.int32), self._special
    )
    self._batch_size, self._max_len = batch_size, max_len
    self._doc_format, self._mask_prob = doc_format, float(mask_prob)
    self._seed, self._num_epochs = int(seed), num_epochs
    self._drop_remainder = drop_remainder
    self._shuffle_buffer = shuffle_buffer
    self._chunk_bytes = chunk_bytes
    self._window = shuffle_buffer or self._global_batch
    self._process_index = process_index
    backend = tokenizers.Tokenizer.from_str(
        tokenizer.backend_tokenizer.to_str()
    )
    backend.no_truncation()
    backend.no_padding()
    encoder = SegmentEncoder(
        backend,
        process_index=process_index,
        process_count=process_count,
        exchange=exchange,
    )
    self._stream = TokenStream(
        TextReader(self.files, doc_format, chunk_bytes),
        encoder,
        sep_id=self._end_id,
        chunk_bytes=chunk_bytes,
    )
    if self._stream.take(1) is None:
      raise ValueError(f'Empty corpus: no tokens in {self.files}')
    self._restart(epoch=0, step=0, pos=StreamPosition(), skip=0)

  def _restart(
      self, *, epoch: int, step: int, pos: StreamPosition, skip: int
  ) -> None:
    self._epoch, self._step = epoch, step
    self._stream.seek(pos, skip)
    self._rows = []  # (row index, content) of the loaded window
    self._rows_window = -1  # index of the loaded window
    self._rows_pos = (pos, skip)

  # --- checkpointable position -------------------------------------------

  def get_state(self) -> dict[str, Any]:
    """Small JSON-able position; `set_state` resumes exactly there."""
    if self._rows_window == self._step // self._steps_per_window:
      pos, skip = self._rows_pos
    else:
      pos, skip = self._stream.position()
    return {
        'epoch': self._epoch,
        'step': self._step,
        'position': {**pos._asdict(), 'skip': skip},
        'seed': self._seed,
        'max_len': self._max_len,
        'doc_format': self._doc_format,
        'global_batch_size': self._global_batch,
        'shuffle_buffer': self._shuffle_buffer,
        'num_files': len(self.files),
        'chunk_bytes': self._chunk_bytes,
    }

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores a position from `get_state()` (checks it fits this setup)."""
    current = self.get_state()
    for key in (
        'seed',
        'max_len',
        'doc_format',
        'global_batch_size',
        'shuffle_buffer',
        'num_files',
        'chunk_bytes',
    ):
      if key in state and state[key] != current[key]:
        raise ValueError(
            f'Iterator state has {key}={state[key]!r}, this iterator'
            f' {current[key]!r}'
        )
    p = dict(state['position'])
    skip = int(p.pop('skip'))
    pos = StreamPosition(
        int(p['file']),
        int(p['offset']),
        bool(p['in_doc']),
        bool(p['mid_line']),
        bool(p['seen_doc']),
    )
    epoch, step = int(state['epoch']), int(state['step'])
    if min(epoch, step, skip, pos.offset) < 0 or pos.file > len(self.files):
      raise ValueError(f'Bad iterator state {dict(state)}')
    self._restart(epoch=epoch, step=step, pos=pos, skip=skip)

  # --- iteration ----------------------------------------------------------

  def close(self) -> None:
    """Closes the open file (iteration reopens it)."""
    self._stream.close()

  @property
  def _steps_per_window(self) -> int:
    return self._window // self._global_batch

  def __iter__(self) -> 'PretrainIterator':
    return self

  def __next__(self) -> Batch:
    while self._num_epochs is None or self._epoch < self._num_epochs:
      window, k = divmod(self._step, self._steps_per_window)
      if self._rows_window != window:
        self._load_window(window)
      g = self._rows[k * self._global_batch : (k + 1) * self._global_batch]
      if g and not (self._drop_remainder and len(g) < self._global_batch):
        self._step += 1
        lo = self._process_index * self._batch_size
        return self._make_batch(g[lo : lo + self._batch_size])
      if self._step == 0:
        raise ValueError(
            f'{self.files} give no batch of global size'
            f' {self._global_batch} (drop_remainder=True)'
        )
      self._restart(epoch=self._epoch + 1, step=0, pos=StreamPosition(), skip=0)
    raise StopIteration

  def _load_window(self, window: int) -> None:
    """Reads the rows of `window` (the stream is at its start)."""
    self._rows_pos = self._stream.position()
    first = window * self._window
    rows = []
    for i in range(self._window):
      content = self._stream.take(self._max_len - 2)
      if content is None:
        break
      rows.append((first + i, content))
    if self._shuffle_buffer:
      rng = np.random.default_rng(
          [self._seed, _SHUFFLE_TAG, self._epoch, window]
      )
      rows = [rows[i] for i in rng.permutation(len(rows))]
    self._rows, self._rows_window = rows, window

  def _make_batch(self, rows: Sequence[tuple[int, np.ndarray]]) -> Batch:
    b, t = self._batch_size, self._max_len
    input_ids = np.full((b, t), self._pad_id, np.int32)
    attention_mask = np.zeros((b, t), np.int32)
    mlm_labels = np.full((b, t), IGNORE_INDEX, np.int32)
    mlm_mask = np.zeros((b, t), bool)
    example_ids = np.full(b, -1, np.int32)
    valid = np.zeros(b, bool)
    attention_mask[len(rows) :, 0] = 1
    for i, (row, content) in enumerate(rows):
      n = len(content) + 2
      ids = input_ids[i]
      ids[0], ids[1 : n - 1], ids[n - 1] = self._start_id, content, self._end_id
      attention_mask[i, :n] = 1
      maskable = (attention_mask[i] == 1) & ~np.isin(ids, self._special)
      rng = np.random.default_rng([self._seed, _MASK_TAG, self._epoch, row])
      input_ids[i], mlm_labels[i], mlm_mask[i] = mask_tokens(
          ids,
          maskable,
          rng,
          mask_prob=self._mask_prob,
          mask_id=self._mask_id,
          random_ids=self._random_ids,
      )
      example_ids[i], valid[i] = row, True
    return {
        'input_ids': input_ids,
        'attention_mask': attention_mask,
        'token_type_ids': np.zeros((b, t), np.int32),
        'mlm_labels': mlm_labels,
        'mlm_mask': mlm_mask,
        'example_ids': example_ids,
        'valid': valid,
    }
