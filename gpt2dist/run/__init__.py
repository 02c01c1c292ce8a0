"""The run directory's life: its layout (every file name, once), the lock, status and stop signals, divergence,
checkpoints (atomic save, verify, keep-last, resume), the run's tokenizer files and export to a Hugging Face folder.

Nothing here imports the others' packages at import time but `engines.base` (the checkpoint manager saves
through the engine seam); `layout` imports nothing, so any package may name a run file through it.
"""
