#!/usr/bin/env bash
# Fine-tunes the MiniLM-L6 teacher on an SST-2 subset, then distils a
# 3-layer student with kd, pkd and codir. Prints each run's summary.
#   bash experiments/sst2_variants.sh OUT_DIR GLUE_DIR [SUBSET] [STEPS]
set -euo pipefail
usage="usage: sst2_variants.sh OUT_DIR GLUE_DIR [SUBSET] [STEPS]"
out=${1:?$usage}
glue=${2:?$usage}
subset=${3:-4000}
steps=${4:-250}
common=(--config.task.data_dir="$glue"
        --config.task.max_len=64 --config.optim.num_steps="$steps"
        --config.log.eval_every_steps=0 --config.log.every_steps=50
        --config.ckpt.every_steps=1000)
python -m codir_jax.main \
  --config "configs/glue_codir.py:task=sst2,subset=$subset" \
  --config.mode=finetune_teacher --config.optim.lr=5e-5 "${common[@]}" \
  --workdir "$out/teacher"
for v in kd pkd codir; do
  python -m codir_jax.main \
    --config "configs/glue_codir.py:task=sst2,subset=$subset,variant=$v" \
    --config.teacher.path="$out/teacher/teacher" --config.optim.lr=1e-4 \
    "${common[@]}" --workdir "$out/$v"
done
for d in teacher kd pkd codir; do
  echo "== $d"; cat "$out/$d/summary.json"
done
