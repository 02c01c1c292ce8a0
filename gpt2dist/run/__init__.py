"""The run directory's life, from the lock to the export.

  layout.py      every file name in a run dir, once (imports nothing: any package may name a run file)
  lock.py        flocks: rank 0's on RUN_DIR/.lock (one run per run dir), prepare's on its packed dir
  signals.py     SIGTERM/SIGUSR1 -> an agreed stop after a checkpoint; status.json; exit 75
  divergence.py  non-finite losses: skip the update, stop after train.max_bad_steps, exit 3
  checkpoint.py  the checkpoint manager: atomic save, manifest, verify, keep-last, latest
  state.py       train_state.json as a type (TrainState): its one reader and one writer
  rundir.py      a fresh or resumed run dir: resume compatibility, UTF-8 scan, the run's tokenizer files
  export.py      a checkpoint -> a folder plain transformers loads
"""
