"""gpt2dist: GPT-2 causal-LM training from a laptop CPU to a Slurm cluster with one YAML config."""

__version__ = "0.1.0"
