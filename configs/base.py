"""The full set of config fields, with defaults and where each comes from.

Experiment configs start from `get_base_config()` and change what they need.
"paper" = the CoDIR paper's description (the project default); "released"
= the authors' released code (github intersun/CoDIR), see METHOD.md.
"""

from __future__ import annotations

import ml_collections

# Variant presets for the distillation objective (METHOD.md, "Baselines").
VARIANTS = {
    # KD only: lambda = 0.
    "kd": dict(crd_weight=0.0, pkd_weight=0.0),
    # PKD-style normalised L2 on pooled mapped layers instead of contrast.
    "pkd": dict(crd_weight=0.0, pkd_weight=100.0),
    # CoDIR: InfoNCE against memory-bank negatives.
    "codir": dict(crd_weight=0.1, pkd_weight=0.0, negatives="bank"),
    # CoDIR with in-batch negatives only (no bank).
    "codir_inbatch": dict(crd_weight=0.1, pkd_weight=0.0, negatives="in_batch"),
}


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> None:
  """Sets the loss fields of a named variant (raises on unknown names)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
  for key, value in VARIANTS[variant].items():
    config.loss[key] = value


def apply_released_code(config: ml_collections.ConfigDict) -> None:
  """The released code's choices where they differ from the paper."""
  config.loss.pooling = "first"  # [CLS]/<s> instead of masked mean.
  config.loss.teacher_layers = "odd"  # Teacher layers 1,3,5,... .
  config.loss.objective = "nce"  # CRD NCE (Eq. 18) instead of InfoNCE.
  config.loss.positive = "bank"  # Positive read from the other bank.
  # fairseq sums CE and KD over the batch and divides the gradient by B,
  # while CRD's loss is a batch mean: lambda acts as lambda / B
  # (fairseq/criterions/sentence_prediction_crd.py).
  config.loss.crd_batch_scaled = True
  # CRD's ContrastMemory indexes both memories with one idx per step.
  config.bank.shared_negatives = True
  config.optim.clip_norm = 0.0  # run_glue_script.py: --clip-norm 0.0.


def get_base_config() -> ml_collections.ConfigDict:
  """Every field a run reads; experiment configs override some."""
  c = ml_collections.ConfigDict()
  # finetune_teacher | distill | evaluate | predict | demo |
  # pretrain_distill (CoDIR-Pre).
  c.mode = "distill"
  c.seed = 0  # Parameter init, dropout, shuffling and negative sampling.

  c.task = ml_collections.ConfigDict()
  c.task.name = "sst2"  # GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, ...).
  # 'tsv' (local GLUE dir), 'tfds' (needs TF) or 'hf' (Hugging Face
  # `nyu-mll/glue`, needs requirements-hf.txt; data_dir '' = the Hub).
  c.task.source = "tsv"
  # GLUE root in the original download layout (tsv; required), or a tfds
  # data_dir. No default: see README "Getting GLUE".
  c.task.data_dir = ""
  c.task.max_len = 128  # Tokens per example after truncation.
  c.task.train_limit = 0  # Use the first N training examples (0 = all).
  c.task.eval_limit = 0  # Evaluate on the first N dev examples (0 = all).
  c.task.eval_batch_size = 64  # Batch size for evaluation and prediction.
  # Batches pad to powers of two from min_bucket up to max_len (few shapes,
  # few compiles); min_bucket = max_len gives one shape.
  c.task.min_bucket = 16

  c.teacher = ml_collections.ConfigDict()
  # Local HF directory of the teacher; '' = the bundled all-MiniLM-L6-v2.
  # In `distill` it should hold a task-fine-tuned teacher with its head
  # (e.g. <workdir of finetune_teacher>/teacher).
  c.teacher.path = ""
  c.teacher.dtype = "float32"  # Compute dtype of the frozen teacher.
  # Shard the frozen teacher's parameters over the mesh's 'data' axis
  # (FSDP-style: each array's largest free dimension that divides), so a
  # large teacher is not replicated on every device; XLA gathers each
  # weight where it is used. Same losses; codir_jax/sharding.py.
  c.teacher.shard_params = False
  # Offline KD (distill on a GLUE task): compute the frozen teacher's
  # per-example outputs on the training set once (logits and pooled mapped
  # layers), keep them in a file under cache_dir, and feed them to every
  # step instead of running the teacher (~40% of a student step). Same
  # losses up to float rounding; codir_jax/train/teacher_cache.py.
  c.teacher.cache_outputs = False
  # '' = $XDG_CACHE_HOME/codir_jax/teacher_outputs (default ~/.cache/...).
  c.teacher.cache_dir = ""

  c.student = ml_collections.ConfigDict()
  # 'teacher_layers': copy the teacher's embeddings, head and `layers`;
  # 'pretrained': load `path` (an HF dir with the same vocabulary).
  c.student.init = "teacher_layers"
  c.student.layers = ()  # 1-based teacher layers; () = every other layer.
  c.student.path = ""  # Used when init == 'pretrained'.
  c.student.dtype = "float32"  # Compute dtype ('bfloat16' on GPU/TPU).
  # Recompute each layer's activations in the backward pass (less memory,
  # more compute, same losses): '' (off) | 'full' | 'dots' |
  # 'dots_no_batch' (jax.checkpoint_policies; codir_jax/models/remat.py).
  c.student.remat = ""

  c.loss = ml_collections.ConfigDict()
  c.loss.kd_weight = 0.5  # beta: L = (1-b) CE + b rho^2 KL (released: 0.5).
  c.loss.kd_temperature = 2.0  # rho (released: 2).
  c.loss.crd_weight = 0.1  # lambda (the paper sweeps it).
  c.loss.pkd_weight = 0.0  # Weight of the PKD-style L2 baseline term.
  c.loss.temperature = 0.07  # tau of InfoNCE / NCE (paper and released).
  c.loss.objective = "info_nce"  # 'info_nce' (paper) | 'nce' (released).
  c.loss.negatives = "bank"  # 'bank' (paper, fine-tuning) | 'in_batch'.
  c.loss.pooling = "mean"  # 'mean' (paper) | 'first' (released).
  # Teacher layers (1-based) paired with student layers 1..Ls: 'even'
  # (paper: 2,4,..), 'odd' (released: 1,3,..) or an explicit tuple.
  c.loss.teacher_layers = "even"
  c.loss.combine = "concat"  # 'concat' (paper) | 'per_layer' (ablation).
  c.loss.proj_dim = 128  # P, projection size (released: 128).
  c.loss.positive = "current"  # 'current' (paper) | 'bank' (released).
  # True (released): lambda / B, B = valid rows of the batch, because the
  # released code sums CE/KD over the batch and divides gradients by B.
  # False (paper, codir_jax): every term is a per-example mean.
  c.loss.crd_batch_scaled = False

  c.bank = ml_collections.ConfigDict()
  c.bank.num_negatives = 100  # K negatives per example (released: 100).
  c.bank.momentum = 0.5  # m in M[i] <- norm(m M[i] + (1-m) z) (released).
  c.bank.label_aware = True  # Negatives have a different label (paper).
  # True (released, CRD): both directions score one set of negative ids;
  # False: each direction draws its own. Draws are without replacement
  # whenever the eligible pool has >= K slots (METHOD.md).
  c.bank.shared_negatives = False
  # Regression tasks: a negative's score differs by more than this.
  c.bank.regression_gap = 1.0
  # Every slot is a candidate negative from step 0 (random unit-ish vectors
  # until written), as in CRD / the released code; False: only written slots.
  c.bank.all_valid_at_init = True
  # pretrain_distill with negatives='bank': FIFO queue length of each side.
  c.bank.queue_size = 4096

  c.optim = ml_collections.ConfigDict()
  c.optim.batch_size = 32  # Global batch (split over the 'data' axis).
  c.optim.lr = 1e-5  # Peak learning rate (released: 1e-5 for SST-2).
  c.optim.weight_decay = 0.1  # AdamW decay (released: 0.1).
  c.optim.b1 = 0.9
  c.optim.b2 = 0.98  # (released: Adam betas (0.9, 0.98)).
  c.optim.eps = 1e-6  # (released).
  c.optim.warmup_frac = 0.06  # Linear warm-up share of steps (released).
  # Global gradient-norm clip (0 = off; the released run script uses 0).
  c.optim.clip_norm = 1.0
  c.optim.num_epochs = 10.0  # Training length (released: 10 epochs).
  c.optim.num_steps = 0  # If > 0, overrides num_epochs.
  # Split each batch into this many micro-batches, run one after another
  # inside the step, and update once on the summed gradients (less
  # activation memory). 1 = off. Task/KD/PKD equal the whole batch; the
  # bank is read and written per micro-batch (codir_jax/train/accumulate.py).
  c.optim.grad_accum_steps = 1

  # (name, size); -1 takes the remaining devices. Parameters are
  # replicated while 'model' is 1.
  c.mesh = [("data", -1), ("model", 1)]
  # Logical axis -> mesh axis (None = replicated); see codir_jax/sharding.py.
  c.sharding_rules = [
      ("batch", "data"),
      ("bank", "data"),
      ("seq", None),
      ("embed", None),
      ("mlp", "model"),
      ("heads", "model"),
      ("kv", None),
      ("vocab", "model"),
      ("layers", None),
      ("proj", None),
  ]

  c.ckpt = ml_collections.ConfigDict()
  c.ckpt.every_steps = 500  # Periodic checkpoint interval.
  c.ckpt.keep = 3  # Latest checkpoints kept.
  c.ckpt.async_save = True  # Save in the background.

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 50  # Train metrics and the progress line.
  c.log.eval_every_steps = 1000  # Dev evaluation (0 = only at the end).
  # Early stopping: end the run after this many dev evaluations in a row
  # without a new best score (0 = off); best/ holds the best model.
  c.log.eval_patience = 0
  c.log.tensorboard = True  # Also write TensorBoard event files.

  # pretrain_distill (CoDIR-Pre) only.
  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.train_files = ()  # Text files or globs (streamed).
  c.pretrain.eval_files = ()  # Held-out text for MLM loss/accuracy.
  c.pretrain.eval_batches = 20  # Fixed masked batches per evaluation.
  c.pretrain.doc_format = "line"  # 'line' | 'blank_line' separated docs.
  c.pretrain.mask_prob = 0.15  # BERT masking rate (80/10/10 split).

  c.eval = ml_collections.ConfigDict()
  # evaluate / predict modes: HF directory to load ('' = <workdir>/student).
  c.eval.model_path = ""
  # distill: after training, also evaluate the loaded teacher on dev and
  # time both models' inference (summary keys teacher_dev and speed).
  c.eval.compare_teacher = True

  # demo mode: finetune_teacher then distill on an embedded task.
  c.demo = ml_collections.ConfigDict()
  c.demo.num_train = 2000  # Generated training sentences.
  c.demo.num_dev = 400  # Generated dev sentences.
  c.demo.teacher_steps = 100  # Teacher fine-tuning steps.
  c.demo.teacher_lr = 1e-4  # Teacher fine-tuning learning rate.

  # JAX's persistent compilation cache: compiled programs (the train step,
  # eval forwards) are stored on disk, and a rerun with the same model and
  # shapes loads them instead of compiling (codir_jax/compile_cache.py,
  # README "Compilation cache"). Never part of a run's recipe.
  c.compile_cache = ml_collections.ConfigDict()
  c.compile_cache.enabled = True  # --config.compile_cache.enabled=False: off.
  # '' = the directory JAX already uses (JAX_COMPILATION_CACHE_DIR), else
  # $XDG_CACHE_HOME/codir_jax/jax_cache (default ~/.cache/codir_jax/...).
  c.compile_cache.dir = ""

  # Several processes (TPU pod hosts, SLURM tasks, `python -m
  # codir_jax.launch`); codir_jax/distributed.py, README "Pods and
  # multi-GPU". The other keys need initialize = True.
  c.distributed = ml_collections.ConfigDict()
  # Join a JAX cluster (jax.distributed.initialize) before touching devices.
  c.distributed.initialize = False
  # 'host:port' of process 0's coordinator; '' = auto-detect (Cloud TPU,
  # SLURM, Open MPI, Kubernetes).
  c.distributed.coordinator_address = ""
  c.distributed.num_processes = 0  # Processes in the cluster; 0 = auto.
  c.distributed.process_id = -1  # This process, 0..num_processes-1; -1 = auto.
  # CPU collectives between processes: '' (none: TPU/GPU) or 'gloo'
  # (several CPU processes, as the local launcher runs them).
  c.distributed.cpu_collectives = ""
  return c
