"""Command line: `python -m codir_jax.main --config configs/x.py --workdir D`.

Only flags are parsed here; everything else is in `codir_jax.train`, so a
notebook can call `train_and_evaluate(config, workdir)` directly. The config
is locked: `--config.loss.temprature=...` (a typo) is an error, not a new
field.
"""

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
  from codir_jax.train import trainer  # pylint: disable=g-import-not-at-top

  trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
