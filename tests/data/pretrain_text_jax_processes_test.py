"""PretrainIterator with `host_exchange.allgather` in two real JAX processes.

Two local CPU processes form one JAX cluster (gloo collectives); each builds
its iterator as `pretrain_run` does and saves its batches. Their rows,
joined in process order, must equal one process's global batches, also
after a resume from the state either of them saved.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from codir_jax.data import host_exchange
from tests.data import pretrain_corpus as corpus

REPO = pathlib.Path(__file__).resolve().parents[2]
B, RESUME_AT = 2, 5
KW = {'max_len': 12, 'num_epochs': 2, 'chunk_bytes': 200, 'shuffle_buffer': 8}

_WORKER = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    out, port, p = sys.argv[1], sys.argv[2], int(sys.argv[3])
    jax.distributed.initialize(
        coordinator_address=f'127.0.0.1:{port}', num_processes=2,
        process_id=p, initialization_timeout=120)
    import numpy as np
    from codir_jax.data import host_exchange
    from tests.data import pretrain_corpus as corpus
    files, kw = json.loads(sys.argv[4]), json.loads(sys.argv[5])
    # Uneven shares: process 1 sends one array fewer, one of them empty.
    local = [np.arange(p + k, dtype=np.int32) for k in range(3 - p)]
    got = host_exchange.allgather(local)
    json.dump([[a.tolist() for a in s] for s in got], open(f'{out}/x{p}', 'w'))
    def build(**extra):
      return corpus.make_iterator(
          files, corpus.tiny_roberta(), batch_size=2,
          process_index=jax.process_index(),
          process_count=jax.process_count(),
          exchange=host_exchange.allgather, **{**kw, **extra})
    it = build()
    batches = [next(it) for _ in range(5)]
    state = it.get_state()
    batches += list(it)
    resumed = build(num_epochs=3)
    resumed.set_state(state)
    batches += [next(resumed) for _ in range(len(batches) - 5)]
    np.savez(f'{out}/b{p}', **{f'{i}/{k}': v for i, b in enumerate(batches)
                               for k, v in b.items()})
    json.dump(state, open(f'{out}/s{p}', 'w'))
""")


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_two(out, files):
  """Runs the worker as processes 0 and 1; raises if either fails."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(REPO)}
  env.pop('XLA_FLAGS', None)
  port = _free_port()
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              '-c',
              _WORKER,
              str(out),
              str(port),
              str(p),
              json.dumps(files),
              json.dumps(KW),
          ],
          cwd=REPO,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for p in range(2)
  ]
  logs = []
  try:
    for proc in procs:
      logs.append(proc.communicate(timeout=300)[0])
  finally:
    for proc in procs:
      proc.kill()
  for p, (proc, log) in enumerate(zip(procs, logs)):
    assert proc.returncode == 0, f'process {p}:\n{log[-6000:]}'


@pytest.mark.slow  # ~15-30 s: two JAX processes start and compile
def test_two_jax_processes_give_the_single_process_batches(tmp_path):
  tok = corpus.tiny_roberta()
  docs = corpus.random_docs(tok, 41, seed=11, hi=40)
  files = [
      corpus.write(tmp_path / 'a.txt', docs[:30]),
      corpus.write(tmp_path / 'b.txt', docs[30:]),
  ]
  one = corpus.make_iterator(files, tok, batch_size=2 * B, **KW)
  ref = [next(one) for _ in range(RESUME_AT)]
  ref_state = one.get_state()
  ref += list(one)
  ref += ref[RESUME_AT:]  # each process resumed from its state at step 5
  _run_two(tmp_path, files)
  for p in range(2):
    assert json.load(open(tmp_path / f'x{p}')) == [
        [[], [0], [0, 1]],
        [[0], [0, 1]],
    ]
    assert json.load(open(tmp_path / f's{p}')) == ref_state
  saved = [np.load(tmp_path / f'b{p}.npz') for p in range(2)]
  assert all(len(s.files) == len(ref) * len(corpus.KEYS) for s in saved)
  joined = [
      {k: np.concatenate([s[f'{i}/{k}'] for s in saved]) for k in corpus.KEYS}
      for i in range(len(ref))
  ]
  corpus.assert_same(joined, ref)


def test_allgather_in_one_process_returns_the_input():
  local = [np.arange(3, dtype=np.int32), np.zeros(0, np.int32)]
  (share,) = host_exchange.allgather(local)
  assert [a.tolist() for a in share] == [[0, 1, 2], []]
  assert host_exchange.allgather([]) == [[]]
