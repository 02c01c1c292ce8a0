"""gpt2dist: GPT-2 causal-LM training from a laptop CPU to a Slurm cluster with one YAML config."""

from gpt2dist import startup_signals as _startup_signals

_startup_signals.install_if_trainer()  # before any heavy import: a stop signal during start-up is kept, not fatal

__version__ = "0.1.0"
