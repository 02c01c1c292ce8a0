"""sbatch templates of `gpt2dist slurm`, shipped inside the wheel as package data (gpt2dist.slurm)."""
