"""The per-rank entry point every launcher starts: `python -m gpt2dist.train run.yaml`.

Read top to bottom: check the config and files -> join the process group -> rank 0 decides resume vs
fresh and writes the tokenizer -> model -> engine -> data stream -> (resume) -> `loop.Trainer` runs the steps
(accumulate micro batches, optimizer step, log, eval, checkpoint).
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2dist import dist, hub
from gpt2dist.arguments import add_train_arguments, parse_with_overrides, train_overrides
from gpt2dist.config import BatchPlan, RunConfig, batch_plan, load_config, save_config, uses_deepspeed
from gpt2dist.data import stamps
from gpt2dist.data.build import build_train_stream, build_val
from gpt2dist.data.epochs import budget_kept, describe_budget, finished_step, resolve_budget, with_budget
from gpt2dist.data.pieces import DocumentEncoder
from gpt2dist.data.text import resolve_files
from gpt2dist.engines.build import build_engine
from gpt2dist.engines.device import check_precision, resolve_device
from gpt2dist.engines.resume import resume_mode
from gpt2dist.engines.trust import check_train_state
from gpt2dist.errors import UserError, run_or_exit
from gpt2dist.loop import Preempted, Trainer
from gpt2dist.model import build_model, count_parameters, flops_per_token
from gpt2dist.observe.curves import CurveWriter
from gpt2dist.observe.metrics import MetricsLogger, peak_flops
from gpt2dist.observe.tracking import open_wandb
from gpt2dist.planning.preflight import cheap_checks, raise_for_problems
from gpt2dist.run.checkpoint import CheckpointManager
from gpt2dist.run.divergence import EXIT_DIVERGED, Diverged
from gpt2dist.run.layout import CONFIG_FILE
from gpt2dist.run.lock import RunLock
from gpt2dist.run.rundir import (
    TOKENIZER_DIR,
    build_run_tokenizer,
    check_utf8,
    prepare_run_dir,
    refuse_planted_links,
    save_tokenizer,
    tokenizer_source,
)
from gpt2dist.run.signals import EXIT_PREEMPTED
from gpt2dist.tokenizer import load_tokenizer

log = logging.getLogger("gpt2dist")


def train(cfg: RunConfig) -> dict[str, Any]:
    """Run (or resume) training to cfg.train.max_steps; returns the final step, loss and val loss."""
    rank = dist.discover()
    if not rank.is_writer:  # one voice: only rank 0 logs (errors still come from every rank)
        logging.getLogger("gpt2dist").setLevel(logging.ERROR)
    # Everything a config mistake can break is checked on every rank before any expensive step.
    plan = batch_plan(cfg.train, rank.world_size)
    use_deepspeed = uses_deepspeed(cfg, rank.world_size)
    device = resolve_device(cfg.train.device, rank.local_rank)
    check_precision(cfg.train.precision, device)
    train_files = resolve_files(cfg.data.train, "data.train")
    val_files = resolve_files(cfg.data.val, "data.val") if cfg.data.val else None

    def join_group() -> None:
        dist.init_process_group(rank, device.type, cfg.distributed.timeout_minutes, deepspeed=use_deepspeed)

    # Hub ids (model.pretrained, tokenizer.path) the HF cache lacks: rank 0 downloads them, the others wait.
    hub.fetch_on_writer(cfg, rank, join_group)
    # The doctor's cheap checks (data rows per rank, disk room for two checkpoints, ...): every rank runs
    # them, so a problem stops all ranks together with exit 2 instead of leaving some waiting.
    raise_for_problems(cheap_checks(cfg, rank.world_size), warn=log.warning if rank.is_writer else None)
    if (use_deepspeed or rank.world_size > 1) and not dist.is_initialized():
        join_group()
    with RunLock(cfg.run_dir, enabled=rank.is_writer) as lock:  # rank 0 holds the run dir until the run ends
        try:
            result = run_training(cfg, rank, plan, use_deepspeed, train_files, val_files, lock)
        except (Preempted, Diverged):  # every rank stops at the same step: leave together
            gc.collect()
            dist.shutdown()
            raise
        except BaseException:  # a barrier here could wait forever on a rank stuck elsewhere
            dist.shutdown(clean=False)
            raise
        gc.collect()
        dist.shutdown()
        if rank.is_writer:  # the HF folder in the output dir, as trainer.save_model() leaves it
            finish_message(cfg, result)
    return result


def finish_message(cfg: RunConfig, result: dict[str, Any]) -> None:
    """Rank 0: write the HF folder (when this launch trained, or an older run lacks it), then name the next command."""
    from gpt2dist.run.export import save_model_folder
    from gpt2dist.run.layout import EXPORT_PROVENANCE as PROVENANCE

    run_dir = Path(cfg.run_dir)
    if not result.get("complete") or not (run_dir / PROVENANCE).is_file():
        save_model_folder(run_dir, result.get("checkpoint"))
    if result.get("complete"):
        print(f"run {run_dir} is already complete: its checkpoint is at step {result['step']}, train.max_steps is "
              f"{result['max_steps']}; nothing to train: raise train.max_steps (or train.num_epochs) to continue it",
              flush=True)
    print(f"model: {run_dir} holds the Hugging Face folder (model, tokenizer, generation config); next: "
          f"gpt2dist generate --model {run_dir} --prompt \"...\"", flush=True)


def run_training(cfg: RunConfig, rank: dist.DistInfo, plan: BatchPlan, use_deepspeed: bool,
                 train_files: list[Path], val_files: list[Path] | None,
                 lock: RunLock | None = None) -> dict[str, Any]:
    run_dir = Path(cfg.run_dir)
    ckpt = CheckpointManager(run_dir, cfg.checkpoint.keep_last, rank=rank.rank, is_writer=rank.is_writer)
    # the checkpoint's engine must suit this run's before anything is written (a refusal leaves the run dir as is)
    fits = partial(resume_mode, use_deepspeed=use_deepspeed, zero_stage=cfg.distributed.zero_stage,
                   world_size=rank.world_size)
    resume_from = dist.on_writer(rank, lambda: setup_run_dir(cfg, ckpt, train_files, val_files, lock,
                                                             check_resume=fits))
    tokenizer = load_tokenizer(run_dir / TOKENIZER_DIR)  # every rank tokenizes with the saved files
    encode = DocumentEncoder(tokenizer)  # ids + EOS per document; long documents in exact pieces (data/pieces.py)
    # train.num_epochs: rank 0 counts one pass's windows (or a resume keeps the checkpoint's budget)
    budget = dist.on_writer(rank, lambda: resolve_budget(cfg, plan, encode, train_files, resume_from))
    cfg = with_budget(cfg, budget)
    done = finished_step(resume_from, cfg.train.max_steps)
    if done is not None:  # nothing to train: say so, never a `loss nan` that reads like divergence
        return {"step": done, "loss": None, "val_loss": None, "tokens": None, "complete": True,
                "checkpoint": resume_from, "max_steps": cfg.train.max_steps}
    seed_everything(cfg.seed)
    model = build_model(cfg, tokenizer)
    n_params = count_parameters(model)  # before ZeRO-3 partitions the parameters away
    fpt = flops_per_token(count_parameters(model, non_embedding=True), model.config.n_layer,
                          model.config.n_embd, cfg.data.block_size)
    engine = build_engine(cfg, model, plan, rank, use_deepspeed=use_deepspeed, resume_from=resume_from)

    stream = build_train_stream(cfg, rank=rank.rank, world_size=rank.world_size, micro=plan.micro, accum=plan.accum,
                                encode=encode, train_files=train_files, pin_memory=engine.device.type == "cuda")
    val_stream = build_val(cfg, encode=encode, train_files=train_files, val_files=val_files)

    start = None
    if resume_from is not None:
        start, cursors = ckpt.load(resume_from, engine, world_size=rank.world_size)
        stream.load_cursors(cursors)

    device_name = torch.cuda.get_device_name(engine.device) if engine.device.type == "cuda" else None
    peak = peak_flops(device_name, cfg.train.precision)
    sinks: list = []  # logging.wandb: rank 0 opens the W&B run; every rank learns of a failure in one line
    if cfg.logging.wandb:
        dist.on_writer(rank, lambda: sinks.append(open_wandb(cfg, run_dir)))
    logger = MetricsLogger(run_dir, enabled=rank.is_writer, total_steps=cfg.train.max_steps,
                           start_step=start.step if start else 0, tensorboard=cfg.logging.tensorboard,
                           progress=cfg.logging.progress, sinks=sinks)
    curves = CurveWriter(run_dir, enabled=rank.is_writer and cfg.logging.curves)
    logger.print(f"gpt2dist: {n_params / 1e6:.2f}M parameters | vocab {len(tokenizer)} | "
                 f"{'deepspeed ZeRO-' + str(cfg.distributed.zero_stage) if use_deepspeed else 'torch'} on "
                 f"{engine.device} {cfg.train.precision} | {plan.describe(cfg.data.block_size)} | "
                 f"{'resuming from ' + resume_from.name if resume_from else 'fresh run'} -> step {cfg.train.max_steps}")
    if budget is not None:
        logger.print(describe_budget(budget, plan, kept=budget_kept(resume_from, budget)))
    trainer = Trainer(cfg, rank, plan, engine=engine, stream=stream, val_stream=val_stream, ckpt=ckpt,
                      logger=logger, curves=curves, start=start, budget=budget,
                      data_files=stamps.stamps(train_files) if rank.is_writer else None,
                      flops_per_token=fpt, peak_flops=peak)
    del engine  # the trainer holds the only reference: the engine goes when it does
    return trainer.run()


def setup_run_dir(cfg: RunConfig, ckpt: CheckpointManager, train_files: list[Path],
                  val_files: list[Path] | None, lock: RunLock | None = None,
                  check_resume: Callable[[Path], Any] | None = None) -> Path | None:
    """Rank 0: lock, decide resume vs fresh, check the checkpoint suits this run's engine (`check_resume`) and
    the text, build the tokenizer, and only then write the run dir."""
    lock = lock or RunLock(cfg.run_dir, enabled=False)
    lock.acquire_existing()  # a run dir another run holds is refused before anything in it is read
    refuse_planted_links(Path(cfg.run_dir))
    resume_from = prepare_run_dir(cfg, ckpt)
    if resume_from is not None and check_resume is not None:
        check_resume(resume_from)
    if resume_from is not None:
        stamps.check_unchanged(check_train_state(resume_from).data_files, resume_from)
    check_utf8(cfg, resume_from, train_files, val_files)
    tokenizer = build_run_tokenizer(cfg, train_files, resume_from)
    source = tokenizer_source(cfg, train_files) if resume_from is None and cfg.data.format != "packed" else None
    run_dir = Path(cfg.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()  # before the first write (a run that started meanwhile holds it: refused here)
        save_tokenizer(tokenizer, run_dir / TOKENIZER_DIR, source)
        save_config(cfg, run_dir / CONFIG_FILE)
    except OSError as exc:  # a read-only or full file system: say so in one line
        raise UserError(f"cannot write to run_dir {run_dir} ({exc.strerror or exc}): check that it is writable "
                        "and has free space") from None
    return resume_from


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "datasets", "torch", "DeepSpeed", "deepspeed"):
        logging.getLogger(noisy).setLevel(logging.WARNING if noisy.lower() == "deepspeed" else logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpt2dist train", description="Train GPT-2 from a YAML run config.")
    add_train_arguments(parser)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parse_with_overrides(parser, argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_train(parse_args(argv))


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or print the resolved config) as parsed `train` arguments say; exit codes as the docs list them."""
    overrides = train_overrides(args)
    if args.print_config:  # nothing runs: the config as this launch (its world size) resolves it
        from gpt2dist.config.docs import resolved_text

        text = run_or_exit(lambda: resolved_text(load_config(args.config, overrides), dist.discover().world_size))
        print(text)
        return {}
    setup_logging()
    try:
        return run_or_exit(lambda: train(load_config(args.config, overrides)))
    except Preempted:
        raise SystemExit(EXIT_PREEMPTED) from None
    except Diverged as exc:  # one line, from rank 0; never 75, so nothing requeues a diverged run
        if dist.discover().is_writer:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_DIVERGED) from None


if __name__ == "__main__":
    main()
