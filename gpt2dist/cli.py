"""`gpt2dist` -- one command, one subcommand per job: demo, prepare, train, launch, slurm, doctor, bench-comm,
eval, export, generate, ds-config, plot, config.

Heavy imports (torch, transformers, datasets) happen inside the subcommand that needs them, so
`gpt2dist --help` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import json
import sys

from gpt2dist.arguments import add_train_arguments, parse_with_overrides, train_overrides
from gpt2dist.errors import run_or_exit


def cmd_train(args: argparse.Namespace) -> None:
    if not args.print_config:  # printing the resolved config needs no data yet
        check_before_torch(args.config, train_overrides(args))
    from gpt2dist.train import run_train

    run_train(args)


def cmd_config(args: argparse.Namespace) -> None:
    from gpt2dist.config.docs import config_command

    print(config_command(args.config, list(args.overrides), args.world_size, args.keys))


def check_before_torch(config: str, overrides: list[str]) -> None:
    """The config and the cheap preflight checks, before `gpt2dist.train` imports torch and transformers (5-15 s):
    most mistakes then fail in well under a second. train() runs the same checks again on every rank."""
    from gpt2dist import hub
    from gpt2dist.config import load_config
    from gpt2dist.dist import discover
    from gpt2dist.planning.preflight import cheap_checks, raise_for_problems

    cfg = load_config(config, overrides)
    if hub.to_download(cfg):  # hub ids to fetch first (rank 0, in train): the checks run there, after it
        return
    raise_for_problems(cheap_checks(cfg, discover().world_size))


def cmd_prepare(args: argparse.Namespace) -> None:
    from gpt2dist.config import load_config
    from gpt2dist.data.prepare import prepare
    from gpt2dist.hub import fetch, to_download
    from gpt2dist.train import setup_logging

    setup_logging()
    cfg = load_config(args.config, args.overrides)
    fetch(to_download(cfg))  # a hub tokenizer id the HF cache lacks (prepare is one process)
    report = prepare(cfg, args.workers)
    speed = (f"; tokenized {report.tokens:,} tokens in {report.seconds:.1f} s = {report.tokens_per_s:,.0f} tokens/s "
             f"({report.tokens_per_s / report.workers:,.0f} per worker, {report.workers} workers)"
             if report.tokenized else "")
    print(f"prepared {report.root}: {report.files} files ({report.tokenized} tokenized, "
          f"{report.files - report.tokenized} up to date), {report.total_tokens:,} tokens{speed}")


def cmd_demo(args: argparse.Namespace) -> None:
    from gpt2dist.demo import run_demo
    from gpt2dist.train import setup_logging

    setup_logging()
    run_demo(args.corpus_dir, args.run_dir, args.overrides, prompt=args.prompt)


def cmd_eval(args: argparse.Namespace) -> None:
    from gpt2dist.evaluate import evaluate_files
    from gpt2dist.train import setup_logging

    setup_logging()
    result = evaluate_files(args.model, args.data, block_size=args.block_size, batch_size=args.batch_size,
                            max_batches=args.max_batches, text_field=args.text_field, device=args.device,
                            encoding=args.encoding, encoding_errors=args.encoding_errors)
    print(f"loss {result['loss']:.4f} | perplexity {result['perplexity']:.3f} | {result['tokens']:,} tokens "
          f"| block {result['block_size']}")
    if args.json:
        print(json.dumps(result))


def cmd_export(args: argparse.Namespace) -> None:
    from gpt2dist.run.export import export
    from gpt2dist.train import setup_logging

    setup_logging()
    if args.push_to_hub:
        from gpt2dist.hub import check_push_target, push

        check_push_target(args.push_to_hub)  # before the export: a bad id or offline mode fails at once
    folder = export(args.source, args.out)
    print(f"exported {folder}")
    if args.push_to_hub:
        print(f"pushed {folder} to {args.push_to_hub}: {push(folder, args.push_to_hub, private=args.private)}")


def cmd_generate(args: argparse.Namespace) -> None:
    from gpt2dist.generate import generate, read_prompts
    from gpt2dist.train import setup_logging

    setup_logging()
    prompts = read_prompts(args.prompts_file) if args.prompts_file else [args.prompt]
    max_new = args.max_new_tokens if args.max_new_tokens is not None or args.max_length is not None else 80
    for n, prompt in enumerate(prompts, 1):
        samples = generate(args.model, prompt, max_new_tokens=max_new, top_k=args.top_k, top_p=args.top_p,
                           temperature=args.temperature, num_samples=args.num_samples, seed=args.seed,
                           device=args.device, max_length=args.max_length, min_length=args.min_length,
                           do_sample=not args.greedy, repetition_penalty=args.repetition_penalty)
        if len(prompts) > 1:
            print(f"=== prompt {n}: {prompt}")
        for i, text in enumerate(samples, 1):
            print(f"--- sample {i} ---\n{text}" if len(samples) > 1 else text)


def cmd_launch(args: argparse.Namespace) -> None:
    from gpt2dist.launcher.local import launch

    code = launch(args.config, args.overrides, args.nproc, no_resume=args.no_resume, module=args.module)
    if code:
        raise SystemExit(code)


def cmd_doctor(args: argparse.Namespace) -> None:
    from gpt2dist.planning.doctor import doctor_command
    from gpt2dist.planning.scaling import options_from_args  # --gpu, --gpus-per-node, links, MFU

    scaling, world_size, nodes = options_from_args(args)
    code = doctor_command(args.config, args.overrides, world_size, args.gpu_mem, nodes, scaling,
                          model_config=args.model_config, as_json=args.json)
    if code:
        raise SystemExit(code)


def cmd_bench_comm(args: argparse.Namespace) -> None:
    from gpt2dist.commbench import main as bench_main

    bench_main([*([args.config] if args.config else []), *args.overrides, "-o", args.output, "--warmup",
                str(args.warmup), "--iters", str(args.iters), "--budget", str(args.budget),
                *(["--max-bytes", args.max_bytes] if args.max_bytes else [])])


def cmd_slurm(args: argparse.Namespace) -> None:
    from gpt2dist.launcher.slurm import SlurmOptions, slurm_command

    opts = SlurmOptions(nodes=args.nodes, gpus_per_node=args.gpus_per_node, nproc_per_node=args.nproc_per_node,
                        time=args.time, partition=args.partition, account=args.account, job_name=args.job_name,
                        launcher=args.launcher, cpus_per_task=args.cpus_per_task, grace=args.signal_grace,
                        max_restarts=args.max_restarts, output=args.log, overrides=list(args.overrides),
                        check=not args.no_check)
    slurm_command(args.config, opts, args.output, args.submit)


def cmd_ds_config(args: argparse.Namespace) -> None:
    from gpt2dist.launcher.ds_config import ds_config_command

    ds_config_command(args.config, args.overrides, args.world_size, args.output)


def cmd_plot(args: argparse.Namespace) -> None:
    from gpt2dist.observe.plot import plot_run

    print(f"wrote {plot_run(args.run_dir, args.output)}")


def _version() -> str:
    from gpt2dist import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt2dist", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gpt2dist {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="write the bundled corpus, train a tiny GPT-2 on CPU, sample from it")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.max_steps=200")
    p.add_argument("--corpus-dir", default="data/demo", help="where the generated corpus goes (default data/demo)")
    p.add_argument("--run-dir", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--prompt", default="Once upon a time")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train (or resume) from a YAML run config")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("config", help="every config key: type, default, allowed values, doc; or a config resolved")
    p.add_argument("config", nargs="?", default=None,
                   help="YAML run config: print it resolved (after overrides, with the derived batch math)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4 or --train.lr 3e-4")
    p.add_argument("--world-size", type=int, default=1, help="data-parallel ranks for the derived batch (default 1)")
    p.add_argument("--keys", default="", metavar="PREFIX", help="list only the keys starting with PREFIX")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("prepare", help="tokenize the config's data once into packed shards (for data.format=packed)")
    p.add_argument("config", help="YAML run config (its data.* and tokenizer.* keys)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.packed_dir=/scratch/tokens")
    p.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: all CPU cores)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("eval", help="loss and perplexity of a Hugging Face GPT-2 folder on text files")
    p.add_argument("--model", required=True, help="a Hugging Face folder, e.g. runs/tiny/export")
    p.add_argument("--data", required=True, nargs="+", help="files or globs (.txt, .jsonl, .parquet)")
    p.add_argument("--block-size", type=int, default=None, help="default: the training block size")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    p.add_argument("--text-field", default="text", help="text column of .jsonl/.parquet files")
    from gpt2dist.config.schema import CHOICES  # light: no torch import

    p.add_argument("--encoding", default="utf-8", choices=CHOICES["data.encoding"],
                   help="text files' encoding (as data.encoding)")
    p.add_argument("--encoding-errors", default="strict", choices=CHOICES["data.encoding_errors"],
                   help="undecodable bytes: refuse (default) or replace (as data.encoding_errors)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", action="store_true", help="also print the result as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="latest checkpoint of a run (or one step dir) -> Hugging Face folder")
    p.add_argument("source", help="run dir or checkpoints/step-NNNNNNNN dir")
    p.add_argument("out", help="output folder")
    p.add_argument("--push-to-hub", default=None, metavar="ORG/NAME",
                   help="then upload the folder to this Hugging Face model repo (created if missing; needs HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("generate", help="sample text from a Hugging Face GPT-2 folder")
    p.add_argument("--model", required=True, help="a Hugging Face folder, e.g. runs/tiny/export")
    p.add_argument("--prompt", default="")
    p.add_argument("--prompts-file", "--prompts_file", help="one prompt per line (each gets its samples)")
    p.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=None, help="default 80")
    p.add_argument("--max-length", "--max_length", type=int, default=None,
                   help="total length, prompt included (model.generate's max_length); instead of --max-new-tokens")
    p.add_argument("--min-length", "--min_length", type=int, default=None, help="minimum length, prompt included")
    p.add_argument("--top-k", "--top_k", type=int, default=50, help="0 disables top-k")
    p.add_argument("--top-p", "--top_p", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--do-sample", "--do_sample", action="store_true", help="sample (the default here)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding (do_sample=False)")
    p.add_argument("--repetition-penalty", "--repetition_penalty", type=float, default=1.0)
    p.add_argument("--num-samples", "--num-return-sequences", "--num_return_sequences", dest="num_samples",
                   type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("launch", help="train on N local ranks through the deepspeed launcher")
    p.add_argument("config", help="YAML run config")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. distributed.zero_stage=2")
    p.add_argument("--nproc", type=int, required=True, help="number of local ranks (GPUs, or CPU processes)")
    p.add_argument("--no-resume", action="store_true", help="start fresh; the run dir must hold no checkpoint")
    p.add_argument("--module", default="gpt2dist.train", choices=["gpt2dist.train", "gpt2dist.commbench"],
                   help="per-rank entry point: training (default) or bench-comm (writes ./bench-comm.json)")
    p.set_defaults(func=cmd_launch)

    from gpt2dist.planning.doctor import add_arguments as doctor_arguments  # light: no torch import

    p = sub.add_parser("doctor", help="check a run config for a world size: batch math, memory per GPU, data, disk")
    doctor_arguments(p)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("bench-comm", help="per rank (start it with launch --module gpt2dist.commbench, torchrun, "
                       "srun): all-reduce/all-gather/reduce-scatter bus bandwidth -> JSON for doctor --comm-json")
    from gpt2dist.commbench import add_arguments as bench_comm_arguments  # light: no torch import

    bench_comm_arguments(p)
    p.set_defaults(func=cmd_bench_comm)

    p = sub.add_parser("slurm", help="render a Slurm batch script for a run config (and optionally submit it)")
    p.add_argument("config", help="YAML run config")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=400")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8, help="0 = CPU ranks (no --gres)")
    p.add_argument("--nproc-per-node", type=int, default=None, help="ranks per node (default: GPUs per node)")
    p.add_argument("--time", default="24:00:00", help="Slurm time limit (default 24:00:00)")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--job-name", default=None, help="default gpt2dist-<run dir name>")
    p.add_argument("--launcher", default="srun", choices=["srun", "torchrun", "deepspeed"],
                   help="srun: one task per rank (default); torchrun: one per node; deepspeed: hostfile")
    p.add_argument("--cpus-per-task", type=int, default=None)
    p.add_argument("--signal-grace", type=int, default=120, help="seconds of warning before the time limit")
    p.add_argument("--max-restarts", type=int, default=5, help="requeues after preemption before giving up")
    p.add_argument("--log", default=None, help="Slurm output file (default ./slurm-logs/%%x-%%j.out)")
    p.add_argument("--no-check", action="store_true", help="skip the doctor's data/disk checks (data only on nodes)")
    p.add_argument("-o", "--output", default=None, help="write the script here (default: print it)")
    p.add_argument("--submit", action="store_true", help="sbatch the script and print the job id")
    p.set_defaults(func=cmd_slurm)

    p = sub.add_parser("ds-config", help="write the explicit DeepSpeed JSON for a run config and world size")
    p.add_argument("config", help="YAML run config")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. distributed.zero_stage=2")
    p.add_argument("--world-size", type=int, default=1, help="data-parallel ranks (default 1)")
    p.add_argument("-o", "--output", default=None, help="JSON file (default: stdout)")
    p.set_defaults(func=cmd_ds_config)

    p = sub.add_parser("plot", help="draw loss, val loss, LR and tokens/s of a run (PNG)")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", default="curves.png")
    p.set_defaults(func=cmd_plot)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The subcommand's arguments, overrides collected wherever they stand (`--a.b v` included)."""
    return parse_with_overrides(build_parser(), argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    run_or_exit(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
