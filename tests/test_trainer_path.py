"""Issue 24: the HF Trainer user's path -- a local pretrained folder with its own byte-level BPE, TrainingArguments
names, epochs as a budget, the linear schedule / warmup ratio / min LR ratio, the HF folder at the end, a finished
run rerun, resume from a named checkpoint (also on another world size), and the README's fine-tune example."""

from __future__ import annotations

import json
import math
import random
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from helpers import run_cli, write_yaml
from ranks import run_ranks

from gpt2dist.config import load_config
from gpt2dist.engines.lr_schedule import lr_at, min_lr, warmup_steps
from gpt2dist.errors import UserError

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
WORDS = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "park", "happy", "little", "big", "story", "day",
         "night", "tree", "bird", "sun", "moon"]


def user_lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24))) + "." for _ in range(n)]


def make_pretrained_folder(folder: Path, texts: list[str], n_positions: int = 64) -> Path:
    """Like a hand-downloaded `./gpt2`: a tiny GPT-2 and its own byte-level BPE, both saved with save_pretrained."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False)
    eos = "<|endoftext|>"
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=eos, bos_token=eos, unk_token=eos)
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(str(folder))
    return folder


def user_files(root: Path) -> None:
    """./gpt2, one big train.txt and a separate eval.txt, as a Trainer user has them."""
    lines = user_lines(200, seed=3)  # ~50 windows of 65 tokens: 2 epochs are ~12 steps of 8 sequences
    (root / "train.txt").write_text("\n".join(lines[:150]) + "\n", encoding="utf-8")
    (root / "eval.txt").write_text("\n".join(lines[150:]) + "\n", encoding="utf-8")
    make_pretrained_folder(root / "gpt2", lines)


# ---------------------------------------------------------------------------------------------- fast: the config

@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("user")
    user_files(root)
    return root


def test_pretrained_folder_brings_its_own_tokenizer():
    """The config's rule (a real fine-tune with the folder's BPE is the README example's test, below)."""
    base = ["data.train=[train.txt]", "model.pretrained=./gpt2"]
    assert load_config(None, base).tokenizer.kind == "pretrained"
    assert load_config(None, ["data.train=[train.txt]"]).tokenizer.kind == "char"
    with pytest.raises(UserError) as info:
        load_config(None, [*base, "tokenizer.kind=char"])
    assert "tokenizer.kind=char" in str(info.value) and "model.resize_embeddings=true" in str(info.value)
    assert load_config(None, [*base, "tokenizer.kind=bpe", "model.resize_embeddings=true"]).tokenizer.kind == "bpe"


def test_any_learning_rate_is_accepted_and_schedules_match_transformers():
    """lr 5e-5 (the Trainer's default) loads; linear and cosine decay after warm-up equal transformers' own
    schedulers (with the floor at 0, as theirs); warmup_ratio rounds up as the Trainer does."""
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    cfg = load_config(None, ["data.train=[x.txt]", "train.lr=5e-5"])
    assert min_lr(cfg.train) == pytest.approx(5e-6)
    with pytest.raises(UserError, match="train.min_lr=0.001 exceeds train.lr"):
        load_config(None, ["data.train=[x.txt]", "train.lr=5e-5", "train.min_lr=1e-3"])
    for schedule, hf in (("linear", get_linear_schedule_with_warmup), ("cosine", get_cosine_schedule_with_warmup)):
        t = load_config(None, ["data.train=[x.txt]", "train.lr=1e-3", f"train.schedule={schedule}",
                               "train.min_lr_ratio=0", "train.max_steps=40", "train.warmup_ratio=0.11"]).train
        assert warmup_steps(t) == 5  # ceil(0.11 x 40) = ceil(4.4)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        ref = hf(opt, num_warmup_steps=5, num_training_steps=40)
        for step in range(40):
            if step >= 5:
                assert lr_at(step, t) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15), (schedule, step)
            opt.step()
            ref.step()


def test_trainer_names_in_yaml_overrides_and_options(tmp_path):
    from gpt2dist.config.overrides import normalize_argv

    trainer = write_yaml(tmp_path / "t.yaml", {
        "output_dir": "out", "num_train_epochs": 3, "per_device_train_batch_size": 4, "learning_rate": "5e-5",
        "save_steps": 50, "save_total_limit": 2, "logging_steps": 5, "warmup_ratio": 0.1,
        "lr_scheduler_type": "linear", "max_grad_norm": 0.5, "data": {"train": ["a.txt"]}})
    ours = write_yaml(tmp_path / "o.yaml", {
        "run_dir": "out", "data": {"train": ["a.txt"]},
        "train": {"num_epochs": 3, "micro_batch_size": 4, "lr": 5e-5, "log_every": 5, "warmup_ratio": 0.1,
                  "schedule": "linear", "grad_clip": 0.5}, "checkpoint": {"every": 50, "keep_last": 2}})
    assert load_config(trainer) == load_config(ours)
    assert load_config(ours, ["learning_rate=1e-4"]).train.lr == 1e-4
    assert normalize_argv(["train", "o.yaml", "--learning_rate", "2e-4", "--seed", "3"]) == \
        ["train", "o.yaml", "--seed", "3", "learning_rate=2e-4"]  # --seed stays (generate's own option)
    clash = write_yaml(tmp_path / "c.yaml", {"learning_rate": "5e-5", "train": {"lr": 3e-4}, "data": {"train": ["a"]}})
    with pytest.raises(UserError) as info:
        load_config(clash)
    assert "learning_rate=" in str(info.value) and "train.lr=" in str(info.value)
    same = write_yaml(tmp_path / "s.yaml", {"learning_rate": "5e-5", "train": {"lr": 5.0e-5}, "data": {"train": ["a"]}})
    assert load_config(same).train.lr == 5e-5
    with pytest.raises(UserError, match=r"did you mean save_steps \(the Trainer's name of checkpoint.every\)"):
        load_config(ours, ["save_step=3"])
    with pytest.raises(UserError, match=r"learning_rate is the Trainer's name of train.lr"):
        load_config(ours, ["train.learning_rate=3"])


def test_training_arguments_json_is_a_config(tmp_path):
    """What transformers itself writes (the independent source): its settings become ours."""
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=4,
                             gradient_accumulation_steps=2, learning_rate=3e-5, save_steps=7, save_total_limit=2,
                             logging_steps=3, weight_decay=0.01, seed=5, use_cpu=True, report_to=[])
    path = tmp_path / "args.json"
    path.write_text(args.to_json_string(), encoding="utf-8")
    cfg = load_config(path, ["data.train=[a.txt]"])
    t = cfg.train
    assert (cfg.run_dir, cfg.seed, t.num_epochs, t.micro_batch_size, t.grad_accum_steps) == \
        (args.output_dir, args.seed, args.num_train_epochs, args.per_device_train_batch_size,
         args.gradient_accumulation_steps)
    assert (t.lr, t.weight_decay, t.beta1, t.beta2, t.grad_clip, t.log_every, t.device) == \
        (args.learning_rate, args.weight_decay, args.adam_beta1, args.adam_beta2, args.max_grad_norm,
         args.logging_steps, "cpu")
    assert (cfg.checkpoint.every, cfg.checkpoint.keep_last, t.schedule) == (7, 2, str(args.lr_scheduler_type.value))


def test_config_reference_shows_trainer_names():
    from gpt2dist.config.docs import reference_text

    text = reference_text("train.lr")
    assert "[Trainer: learning_rate]" in text


def test_old_run_dir_without_new_keys_still_resumes(tmp_path):
    """A config.yaml saved before model.resize_embeddings existed compares equal: missing keys take defaults."""
    from gpt2dist.config import save_config
    from gpt2dist.run.rundir import check_resume_compatible

    cfg = load_config(None, ["data.train=[a.txt]", f"run_dir={tmp_path}"])
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del saved["model"]["resize_embeddings"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_resume_compatible(cfg, tmp_path)


# ---------------------------------------------------------------------------------------------- slow: real runs

def readme_example() -> tuple[str, list[list[str]]]:
    """(finetune.yaml, the commands) of the README's fine-tune section, as written there."""
    section = README.split("## Fine-tune a local folder, as with the HF Trainer", 1)[1].split("\n## ", 1)[0]
    text = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    commands = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return text, [shlex.split(line, comments=True) for line in commands.splitlines() if line.strip()]


def independent_steps(root: Path, block_size: int, epochs: float, global_batch: int) -> int:
    """Windows of one pass counted with transformers directly: each line (its newline kept, as TextDataset and
    load_dataset("text", keep_linebreaks=True) keep it) as ids + EOS, cut into windows of block + 1."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(root / "gpt2"))
    lines = [ln for ln in (root / "train.txt").read_text().splitlines(keepends=True) if ln.strip()]
    tokens = sum(len(tok(ln, add_special_tokens=False)["input_ids"]) + 1 for ln in lines)
    return math.ceil(epochs * (tokens // (block_size + 1)) / global_batch)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """The README's example, run as written in a folder holding ./gpt2, train.txt and eval.txt."""
    root = tmp_path_factory.mktemp("readme")
    user_files(root)
    text, commands = readme_example()
    (root / "finetune.yaml").write_text(text, encoding="utf-8")
    outputs = []
    for argv in commands:
        assert argv[0] == "gpt2dist"
        outputs.append(run_cli(*argv[1:], cwd=root, timeout=300))
    return root, yaml.safe_load(text), outputs


@pytest.mark.slow
def test_readme_example_trains_the_epoch_budget_and_leaves_an_hf_folder(readme_run):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    root, cfg, (train, evaluation, generation) = readme_run
    run = root / cfg["output_dir"]
    steps = independent_steps(root, cfg["data"]["block_size"], cfg["num_train_epochs"],
                              cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"])
    assert f"-> {steps} steps" in train.stdout
    assert json.loads((run / "checkpoints" / "step-" f"{steps:08d}" / "train_state.json").read_text())["step"] == steps
    assert train.stdout.strip().splitlines()[-1].startswith(f"model: {cfg['output_dir']} holds")
    assert "gpt2dist generate --model" in train.stdout.strip().splitlines()[-1]
    # the folder's own tokenizer, embeddings not resized; the output dir loads as trainer.save_model() left it
    model = GPT2LMHeadModel.from_pretrained(str(run))
    original = AutoTokenizer.from_pretrained(str(root / "gpt2"))
    assert model.get_input_embeddings().num_embeddings == len(original)
    assert AutoTokenizer.from_pretrained(str(run)).get_vocab() == original.get_vocab()
    assert (run / "generation_config.json").is_file()
    assert "perplexity" in evaluation.stdout or "ppl" in evaluation.stdout
    assert generation.stdout.count("--- sample") == 3


@pytest.mark.slow
def test_finished_run_rerun_says_complete(readme_run):
    root, cfg, _ = readme_run
    rerun = run_cli("train", "finetune.yaml", cwd=root)
    assert "already complete" in rerun.stdout and "loss nan" not in rerun.stdout + rerun.stderr


@pytest.mark.slow
def test_resume_from_named_checkpoint_into_a_new_output_dir_is_exact(readme_run):
    from safetensors.torch import load_file

    root, cfg, _ = readme_run
    run = root / cfg["output_dir"]
    mid = sorted((run / "checkpoints").glob("step-*"))[0]
    out = run_cli("train", "finetune.yaml", "output_dir=runs/again", f"resume_from_checkpoint={mid}", cwd=root)
    assert f"resuming from {mid.name}" in out.stdout and "kept from the checkpoint" in out.stdout
    first, again = load_file(str(run / "model.safetensors")), load_file(str(root / "runs/again/model.safetensors"))
    assert first.keys() == again.keys()
    for name in first:
        assert torch.equal(first[name], again[name]), name


@pytest.mark.slow
def test_epoch_budget_kept_across_a_world_size_change(tmp_path, folder):
    """2 ranks (DeepSpeed) with a 2-epoch budget; resumed mid-budget from a named checkpoint on 1 rank into a new
    output dir: the step count is the 2-rank run's, and the run ends there."""
    cfg = {"output_dir": str(tmp_path / "two"), "model_name_or_path": str(folder / "gpt2"), "num_train_epochs": 2,
           "logging_steps": 5, "save_steps": 8, "learning_rate": "5e-5",
           "data": {"train": [str(folder / "train.txt")], "block_size": 64, "sample_by": "line"},
           "train": {"global_batch_size": 8, "micro_batch_size": 4, "eval_every": 0},
           "distributed": {"backend": "deepspeed"}, "logging": {"tensorboard": False, "progress": "lines",
                                                                 "curves": False}}
    config = write_yaml(tmp_path / "run.yaml", cfg)
    two = run_ranks("launch", config, nproc=2, timeout=300)
    steps = independent_steps(folder, 64, 2, 8)
    assert f"-> {steps} steps" in two.stdout
    mid = tmp_path / "two" / "checkpoints" / "step-00000008"
    one = run_cli("train", str(config), f"output_dir={tmp_path / 'one'}", f"resume_from_checkpoint={mid}")
    assert f"{steps} steps, kept from the checkpoint" in one.stdout
    final = json.loads((tmp_path / "one" / "checkpoints" / f"step-{steps:08d}" / "train_state.json").read_text())
    assert final["step"] == steps and final["world_size"] == 1


# ---------------------------------------------------------------------------------------------- newcomer fixes

def test_version_option(capsys):
    from gpt2dist import __version__
    from gpt2dist.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"gpt2dist {__version__}"


def test_slurm_script_written_with_o_has_its_log_dir(tmp_path, monkeypatch):
    """Slurm does not create the #SBATCH --output folder: a script sbatch'ed by hand would lose its log."""
    from gpt2dist.launcher.slurm import SlurmOptions, slurm_command

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.txt").write_text("some text\n" * 50)
    config = write_yaml(tmp_path / "run.yaml", {"data": {"train": ["train.txt"]}, "run_dir": "runs/x"})
    slurm_command(str(config), SlurmOptions(nodes=1, gpus_per_node=1, check=False), "job.sbatch", False)
    output = re.search(r"#SBATCH --output=(\S+)", (tmp_path / "job.sbatch").read_text()).group(1)
    assert Path(output.replace("%%", "%")).parent.is_dir()


@pytest.mark.slow
def test_generate_in_the_trainer_users_words(readme_run, tmp_path):
    """--max-length counts the prompt, as model.generate's max_length does: greedy output equals transformers'
    own generate on the same input; --min-length holds EOS back; a prompts file gives each prompt its samples."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from gpt2dist.generate import generate

    root, cfg, _ = readme_run
    run = str(root / cfg["output_dir"])
    tok = AutoTokenizer.from_pretrained(run)
    model = GPT2LMHeadModel.from_pretrained(run).eval()
    prompt = "the cat sat"
    n_prompt = len(tok(prompt)["input_ids"])
    ours = generate(run, prompt, max_new_tokens=None, max_length=n_prompt + 6, do_sample=False,
                    repetition_penalty=1.3)
    ids = torch.tensor([[tok.eos_token_id, *tok(prompt)["input_ids"]]])
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                         repetition_penalty=1.3, pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    assert ours == [tok.decode(ref[0][1:], skip_special_tokens=True)]
    long = generate(run, prompt, max_new_tokens=None, max_length=n_prompt + 8, min_length=n_prompt + 8,
                    do_sample=False)
    assert len(tok(long[0])["input_ids"]) >= n_prompt + 6  # EOS held back (a decode may merge a token or two)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat\n\nthe dog\n")
    out = run_cli("generate", "--model", run, "--prompts-file", str(prompts), "--num_return_sequences", "2",
                  "--max_length", "12", "--do_sample", "--seed", "3")
    assert out.stdout.count("=== prompt") == 2 and out.stdout.count("--- sample") == 4
    with pytest.raises(UserError, match="not both"):
        generate(run, prompt, max_new_tokens=5, max_length=9)
    with pytest.raises(UserError, match="needs sampling"):
        generate(run, prompt, num_samples=2, do_sample=False)
