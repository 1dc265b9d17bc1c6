"""Command line: `python -m codir_jax.main --config configs/x.py --workdir D`.

Only flags are parsed here; everything else is in `codir_jax.train`, so a
notebook can call `train_and_evaluate(config, workdir)` directly. The config
is locked: `--config.loss.temprature=...` (a typo) is an error, not a new
field.

Errors caused by the input (a config value, a file, a checkpoint, a
diverged run) print as one paragraph, `codir_jax: error: <message>`, and
exit 1; the traceback (and any library error chained to it) only with
`--verbosity=1` or higher.
"""

import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Path to a config file (configs/*.py[:args]).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory: checkpoints, metrics, exports."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Orbax and JAX log every checkpoint step at INFO; keep the console to
  # progress lines and warnings (pass --verbosity=0 to see them).
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  # JAX flags are set in one place: sharding.configure_jax (called by
  # train_and_evaluate).
  # pylint: disable=g-import-not-at-top
  from codir_jax.train import checkpointing
  from codir_jax.train import trainer

  # What bad input raises; each message names the key, file or step
  # (OSError: missing, unreadable and not-a-directory paths).
  input_errors = (
      ValueError,
      OSError,
      FloatingPointError,
      checkpointing.CheckpointError,
  )
  try:
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except input_errors as e:
    if flags.FLAGS.verbosity >= 1:
      raise
    more = (
        "" if "--verbosity=1" in str(e) else "\n(traceback: add --verbosity=1)"
    )
    print(f"codir_jax: error: {e}{more}", file=sys.stderr)
    sys.exit(1)


def _parse_flags(argv):
  """absl's flag parsing; an unknown --config.<key> is one line, not a trace."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:  # ml_collections' locked config.
    typed = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    guess = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', str(e))
    hint = f": {guess[2]!r}, did you mean {guess[1]!r}?" if guess else ""
    print(
        f"codir_jax: error: unknown config key in {' '.join(typed)}{hint}",
        file=sys.stderr,
    )
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
