"""The training loop and the per-rank entry point every launcher starts: `python -m gpt2dist.train run.yaml`.

Read top to bottom: resolve files -> tokenizer -> model -> engine -> data stream -> (resume) -> steps of
(accumulate micro batches, optimizer step, log, eval, checkpoint).
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from gpt2dist import dist
from gpt2dist.checkpoint import CheckpointManager
from gpt2dist.config import RunConfig, load_config, save_config, to_dict
from gpt2dist.data import PackedStream, Window, eval_batches, iter_documents, resolve_files
from gpt2dist.engine import Engine, TorchEngine
from gpt2dist.errors import UserError, run_or_exit
from gpt2dist.metrics import MetricsLogger, Throughput, mfu, peak_flops
from gpt2dist.model import build_model, check_block_size, count_parameters, flops_per_token
from gpt2dist.tokenizer import build_tokenizer, encode_documents, load_tokenizer

log = logging.getLogger("gpt2dist")

# Changing these between a checkpoint and its resume would silently train a different run.
RESUME_MUST_MATCH = ("model", "tokenizer", "data.block_size", "data.train", "data.sample_by", "data.val_fraction")


def train(cfg: RunConfig) -> dict[str, Any]:
    """Run (or resume) training to cfg.train.max_steps; returns the final step, loss and val loss."""
    rank = dist.discover()
    run_dir = Path(cfg.run_dir)
    ckpt = CheckpointManager(run_dir, cfg.checkpoint.keep_last, rank=rank.rank, is_writer=rank.is_writer)
    resume_from = prepare_run_dir(cfg, ckpt)

    # Everything a config mistake can break is checked before the first expensive step.
    train_files = resolve_files(cfg.data.train, "data.train")
    val_files = resolve_files(cfg.data.val, "data.val") if cfg.data.val else None
    check_block_size(cfg)
    seed_everything(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = run_tokenizer(cfg, run_dir, train_files)
    model = build_model(cfg, tokenizer)
    engine: Engine = TorchEngine(model, cfg.train, activation_checkpointing=cfg.model.activation_checkpointing)
    save_config(cfg, run_dir / "config.yaml")

    def encode(docs: list[str]) -> list[list[int]]:
        return encode_documents(tokenizer, docs)

    train_heldout = False if (cfg.data.val_fraction > 0 and val_files is None) else None
    stream = PackedStream(train_files, cfg.data, encode, heldout=train_heldout, rank=rank.rank,
                          world_size=rank.world_size)
    val_stream = val_stream_factory(cfg, train_files, val_files, encode)

    step, tokens = 0, 0
    if resume_from is not None:
        train_state, cursor = ckpt.load(resume_from, engine)
        stream.load_state_dict(cursor)
        step, tokens = train_state["step"], train_state["tokens"]

    tcfg = cfg.train
    tokens_per_step = tcfg.micro_batch_size * tcfg.grad_accum_steps * cfg.data.block_size * rank.world_size
    n_params = count_parameters(model)
    fpt = flops_per_token(count_parameters(model, non_embedding=True), model.config.n_layer,
                          model.config.n_embd, cfg.data.block_size)
    device_name = torch.cuda.get_device_name(engine.device) if engine.device.type == "cuda" else None
    peak = peak_flops(device_name, tcfg.precision)
    logger = MetricsLogger(run_dir, enabled=rank.is_writer, total_steps=tcfg.max_steps, start_step=step,
                           tensorboard=cfg.logging.tensorboard, progress=cfg.logging.progress)
    logger.print(f"gpt2dist: {n_params / 1e6:.2f}M parameters | vocab {len(tokenizer)} | device {engine.device} "
                 f"{tcfg.precision} | micro batch {tcfg.micro_batch_size} x accum {tcfg.grad_accum_steps} x "
                 f"ranks {rank.world_size} x block {cfg.data.block_size} = {tokens_per_step:,} tokens/step | "
                 f"{'resuming from ' + resume_from.name if resume_from else 'fresh run'} -> step {tcfg.max_steps}")
    trace = open_trace(run_dir, rank.rank, step) if cfg.logging.trace_windows else None

    last_loss, last_val = float("nan"), None
    if step == 0 and tcfg.eval_every and val_stream is not None:
        last_val = evaluate(engine, val_stream, tcfg.micro_batch_size, tcfg.eval_batches)
        logger.log({"step": 0, "val_loss": last_val, "val_ppl": float(np.exp(last_val))})
    speed, first_step, started = Throughput(), step, time.perf_counter()
    while step < tcfg.max_steps:
        loss_sum = torch.zeros((), device=engine.device)
        for _ in range(tcfg.grad_accum_steps):
            batch, windows = stream.next_batch(tcfg.micro_batch_size)
            if trace is not None:
                write_trace(trace, step + 1, windows)
            loss = engine.forward_loss(batch)
            engine.backward(loss)
            loss_sum += loss.detach()
        result = engine.step(step)
        step += 1
        tokens += tokens_per_step
        speed.add(tokens_per_step)

        if step % tcfg.log_every == 0 or step == tcfg.max_steps:
            last_loss = float(loss_sum) / tcfg.grad_accum_steps  # the only host sync of a step
            rate = speed.report()
            elapsed = time.perf_counter() - started
            logger.log({"step": step, "loss": last_loss, "lr": result.lr, "grad_norm": result.grad_norm,
                        "tokens": tokens, "tokens_per_s": rate, "mfu": mfu(rate, fpt, peak),
                        "epoch": stream.epoch, "skipped": result.skipped or None,
                        "eta_s": elapsed / (step - first_step) * (tcfg.max_steps - step)})
        if tcfg.eval_every and val_stream is not None and (step % tcfg.eval_every == 0 or step == tcfg.max_steps):
            last_val = evaluate(engine, val_stream, tcfg.micro_batch_size, tcfg.eval_batches)
            logger.log({"step": step, "val_loss": last_val, "val_ppl": float(np.exp(last_val))})
        if (cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or step == tcfg.max_steps:
            saved = ckpt.save(step, engine, train_state={"step": step, "tokens": tokens, "epoch": stream.epoch,
                                                         "world_size": rank.world_size},
                              cursor=stream.state_dict())
            logger.print(f"checkpoint {saved}", step=step)
    logger.close()
    if trace is not None:
        trace.close()
    return {"step": step, "loss": last_loss, "val_loss": last_val, "tokens": tokens}


def prepare_run_dir(cfg: RunConfig, ckpt: CheckpointManager) -> Path | None:
    """Decide resume vs fresh; refuse to mix a new run into a run dir that holds another one."""
    run_dir = Path(cfg.run_dir)
    latest = ckpt.latest()
    if cfg.train.resume and latest is not None:
        check_resume_compatible(cfg, run_dir)
        return latest
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return None
    if cfg.train.resume and (run_dir / "config.yaml").is_file():
        check_resume_compatible(cfg, run_dir)
        log.warning("run dir %s has no complete checkpoint yet: starting from step 0", run_dir)
        return None
    if latest is not None:
        raise UserError(f"run_dir {run_dir} already holds checkpoints (latest {latest.name}): drop --no-resume "
                        "/ train.resume=false to continue it, or choose a new run_dir")
    raise UserError(f"run_dir {run_dir} is not empty and holds no gpt2dist run: choose a new run_dir or empty it")


def check_resume_compatible(cfg: RunConfig, run_dir: Path) -> None:
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    current = to_dict(cfg)
    for key in RESUME_MUST_MATCH:
        old, new = _lookup(saved, key), _lookup(current, key)
        if old != new:
            raise UserError(f"config key {key} changed since this run started ({old!r} -> {new!r}): resuming "
                            f"{run_dir} needs the same value, or use a new run_dir")


def _lookup(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part, {}) if isinstance(tree, dict) else {}
    return tree


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_tokenizer(cfg: RunConfig, run_dir: Path, train_files: list[Path]):
    """The run's tokenizer folder: reused when it exists (resume), else built once and saved."""
    folder = run_dir / "tokenizer"
    if (folder / "tokenizer_config.json").is_file():
        return load_tokenizer(folder)
    tcfg = cfg.tokenizer
    texts = None
    if tcfg.kind != "pretrained":
        heldout = False if cfg.data.val_fraction > 0 and not cfg.data.val else None
        texts = iter_documents(train_files, cfg.data, heldout=heldout)
    tokenizer = build_tokenizer(tcfg.kind, path=tcfg.path or cfg.model.pretrained, vocab_size=tcfg.vocab_size,
                                texts=texts)
    tmp = run_dir / "tokenizer.tmp"
    tokenizer.save_pretrained(str(tmp))
    tmp.replace(folder)
    return load_tokenizer(folder)


def val_stream_factory(cfg: RunConfig, train_files, val_files, encode):
    """A callable giving a fresh, non-repeating validation stream, or None when there is no val data."""
    if val_files is not None:
        return lambda: PackedStream(val_files, cfg.data, encode, repeat=False)
    if cfg.data.val_fraction > 0:
        return lambda: PackedStream(train_files, cfg.data, encode, heldout=True, repeat=False)
    log.warning("no validation data (data.val empty and data.val_fraction=0): evaluation is off")
    return None


def evaluate(engine: Engine, factory, batch_size: int, n_batches: int) -> float:
    """Mean loss over the first n_batches of the validation stream (the same windows every time)."""
    losses = [engine.eval_loss(batch) for batch in eval_batches(factory, batch_size, n_batches)]
    if not losses:
        raise UserError("the validation data gives no full window of data.block_size + 1 tokens: add "
                        "validation text or lower data.block_size")
    return float(np.mean(losses))


def open_trace(run_dir: Path, rank: int, start_step: int):
    """Append-mode trace; a `# start N` line marks where each (re)start began, so readers can drop the
    lines a killed run wrote after its last checkpoint."""
    folder = run_dir / "trace"
    folder.mkdir(exist_ok=True)
    trace = open(folder / f"windows-rank{rank:05d}.txt", "a", encoding="utf-8")  # noqa: SIM115
    trace.write(f"# start {start_step}\n")
    return trace


def write_trace(trace, step: int, windows: list[Window]) -> None:
    """One line per window: step, epoch, index in epoch, digest -- enough to prove no repeat or gap."""
    trace.writelines(f"{step} {w.epoch} {w.index} {w.digest()}\n" for w in windows)
    trace.flush()


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "datasets", "torch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpt2dist train", description="Train GPT-2 from a YAML run config.")
    parser.add_argument("config", help="YAML run config (see examples/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=400")
    parser.add_argument("--no-resume", action="store_true", help="start fresh; the run dir must be empty")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    overrides = list(args.overrides) + (["train.resume=false"] if args.no_resume else [])
    setup_logging()
    return run_or_exit(lambda: train(load_config(args.config, overrides)))


if __name__ == "__main__":
    main()
