"""Every name in a run directory, defined once. Imports nothing, so any package may name a run file through it.

    RUN_DIR/
      config.yaml            the resolved run config (a resume compares its keys)
      .lock                  rank 0's flock: one run per run dir
      status.json  STOP      what the run is doing; a STOP file asks it to checkpoint and exit
      metrics.jsonl          one record per log step; curves.png drawn from it; wandb_id for W&B restarts
      tokenizer/             the run's tokenizer (+ gpt2dist-source.json: what it was built from)
      data/                  packed shards (`gpt2dist prepare`), unless data.packed_dir says otherwise
      checkpoints/
        latest               the last complete step dir's name, written last via rename
        step-00001000/       manifest.json (last: the step is complete), train_state.json, model.safetensors,
                             config.json, cursor-rankNNNNN.json, rng-rankNNNNN.pt, deepspeed/, universal/
"""

from __future__ import annotations

CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"
STATUS_FILE = "status.json"
STOP_FILE = "STOP"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
WANDB_ID_FILE = "wandb_id"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_SOURCE_FILE = "gpt2dist-source.json"  # inside tokenizer/, so it is published together with the tokenizer

CHECKPOINTS_DIR = "checkpoints"
LATEST = "latest"
MANIFEST = "manifest.json"
TRAIN_STATE_FILE = "train_state.json"
UNIVERSAL_DIR = "universal"  # DeepSpeed's universal checkpoint, converted in place for a world-size change
CURSOR_GLOB = "cursor-rank*.json"
RNG_GLOB = "rng-rank*.pt"

# What a run writes at the top of its run dir: a link at any of these names would have a write land elsewhere.
RUN_DIR_NAMES = (LOCK_FILE, STATUS_FILE, STOP_FILE, METRICS_FILE, CONFIG_FILE, TOKENIZER_DIR, CHECKPOINTS_DIR,
                 "tensorboard", "trace", CURVES_FILE, "wandb", WANDB_ID_FILE)

EXPORT_PROVENANCE = "gpt2dist_export.json"  # in an export: what eval needs to know that config.json does not say


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def cursor_file(rank: int) -> str:
    return f"cursor-rank{rank:05d}.json"


def rng_file(rank: int) -> str:
    return f"rng-rank{rank:05d}.pt"
