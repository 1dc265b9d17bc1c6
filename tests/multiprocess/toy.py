"""A stand-in for the CLI in launcher tests: no JAX, starts in milliseconds.

  python -m codir_jax.launch ... --module tests.multiprocess.toy -- MODE

MODE 'echo': print the process's flags and device count, exit 0.
MODE 'fail': process 1 exits 3 after 0.5 s; process 0 sleeps and ignores
  SIGTERM, so only the launcher's SIGKILL can end it.
MODE 'term': wait for SIGTERM, print 'saved', exit 0.
"""

import os
import signal
import sys
import time


def main(argv):
  mode = argv[1]
  pid = int(next(a for a in argv if "process_id=" in a).split("=")[1])
  if mode == "echo":
    print(" ".join(argv[2:]))
    print(os.environ["XLA_FLAGS"], os.environ["JAX_PLATFORMS"])
    print("stderr line", file=sys.stderr)
    return 0
  if mode == "fail":
    if pid == 1:
      time.sleep(0.5)
      return 3
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)
    return 0
  if mode == "term":
    signal.signal(signal.SIGTERM, lambda *_: (print("saved"), sys.exit(0)))
    print("ready", flush=True)
    time.sleep(600)
  return 2


if __name__ == "__main__":
  sys.exit(main(sys.argv))
