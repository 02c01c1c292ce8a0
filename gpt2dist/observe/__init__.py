"""What a run shows while it runs and after.

  metrics.py   metrics.jsonl and the console line; tokens/s, MFU (one peak-FLOPs table)
  tracking.py  TensorBoard and W&B (rank 0; W&B imported only when logging.wandb is on)
  curves.py    RUN_DIR/curves.png redrawn after evals within a wall-clock budget
  plot.py      `gpt2dist plot`: loss, val loss, LR, tokens/s against step
"""
