"""What a run shows while it runs: metrics.jsonl and the console line, TensorBoard and W&B, curves.png and
`gpt2dist plot`."""
