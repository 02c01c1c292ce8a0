"""`gpt2dist slurm`: render a batch script from slurm/ templates (and optionally sbatch it).

The run config is loaded, validated and its batch math checked for nodes x ranks at render time, so a
mistake fails here and not after hours in the queue. Every value that lands in the script is
shell-quoted; the interpreter is the absolute path of the Python that rendered it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from gpt2dist import atomic
from gpt2dist.config import RunConfig, batch_plan, load_config, uses_deepspeed
from gpt2dist.errors import UserError

TEMPLATES = resources.files("gpt2dist.slurm")  # package data: found the same way in a clone and a wheel
LAUNCHERS = ("srun", "torchrun", "deepspeed")
DEFAULT_LAUNCHER = "srun"  # Slurm owns every rank: signals, cleanup and accounting need nothing else
TIME_RE = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")
FORWARD = {  # what the batch shell does, besides touching RUN_DIR/STOP, when a stop signal arrives
    "srun": '  kill -USR1 "$child" 2>/dev/null || true  # srun passes USR1 on to every rank at once\n',
    "torchrun": "",  # torchrun would die of USR1 itself; the STOP file reaches its ranks instead
    "deepspeed": "",  # the deepspeed launcher SIGKILLs its ranks on TERM; the STOP file is gentler
}


@dataclass
class SlurmOptions:
    nodes: int = 1
    gpus_per_node: int = 8
    nproc_per_node: int | None = None  # default: one rank per GPU
    time: str = "24:00:00"
    partition: str | None = None
    account: str | None = None
    job_name: str | None = None
    launcher: str = DEFAULT_LAUNCHER
    cpus_per_task: int | None = None
    grace: int = 120  # seconds between the USR1 warning and the time limit
    max_restarts: int = 5
    output: str | None = None  # Slurm log path; default WORKDIR/slurm-logs/%x-%j.out
    check: bool = True  # run the doctor's cheap checks (data, disk, rows per rank) before writing
    overrides: list[str] = field(default_factory=list)


def ranks_per_node(opts: SlurmOptions) -> int:
    if opts.nproc_per_node is not None:
        return opts.nproc_per_node
    if opts.gpus_per_node == 0:
        raise UserError("--gpus-per-node 0 means CPU ranks: give their number with --nproc-per-node")
    return opts.gpus_per_node


def check_options(opts: SlurmOptions) -> None:
    for what, value in (("--job-name", opts.job_name), ("--partition", opts.partition), ("--account", opts.account),
                        ("--log", opts.output), ("--time", opts.time), *(("override", o) for o in opts.overrides)):
        if value is not None:
            one_line(what, value)
    if opts.launcher not in LAUNCHERS:
        raise UserError(f"--launcher {opts.launcher!r} is not one of {', '.join(LAUNCHERS)}")
    if opts.nodes < 1 or opts.gpus_per_node < 0 or ranks_per_node(opts) < 1:
        raise UserError("--nodes and --nproc-per-node must be >= 1 and --gpus-per-node >= 0")
    if not TIME_RE.fullmatch(opts.time):
        raise UserError(f"--time {opts.time!r} is not a Slurm time (e.g. 24:00:00 or 2-00:00:00)")
    if opts.grace < 1 or opts.max_restarts < 0:
        raise UserError("--signal-grace must be >= 1 s and --max-restarts >= 0")
    if opts.cpus_per_task is not None and opts.cpus_per_task < 1:
        raise UserError(f"--cpus-per-task must be >= 1, got {opts.cpus_per_task} (leave it out for the default)")


def render(config_path: str, opts: SlurmOptions, *, python: str | None = None, workdir: str | None = None) -> str:
    """The batch script text for `config_path` (+ overrides); python/workdir default to this process's."""
    one_line("the config path", config_path)
    check_options(opts)
    cfg: RunConfig = load_config(config_path, opts.overrides)
    nproc = ranks_per_node(opts)
    world = opts.nodes * nproc
    batch_plan(cfg.train, world)  # the batch triple must fit nodes x ranks now, not after the queue
    uses_deepspeed(cfg, world)  # backend=torch cannot run several ranks
    check_devices(cfg, opts)
    workdir = workdir or os.getcwd()
    python = python or sys.executable
    for what, value in (("config key run_dir", cfg.run_dir), ("the working directory", workdir),
                        ("the Python interpreter path", python)):
        one_line(what, value)
    if opts.check:  # a config that cannot run fails here, not after hours in the queue
        from gpt2dist.planning.preflight import cheap_checks, raise_for_problems

        raise_for_problems(cheap_checks(cfg, world, base_dir=workdir),
                           warn=lambda message: print(f"warning: {message}", file=sys.stderr))
    config_abs = os.path.join(workdir, config_path) if not os.path.isabs(config_path) else config_path
    run_dir = cfg.run_dir if os.path.isabs(cfg.run_dir) else os.path.join(workdir, cfg.run_dir)
    per_node_tasks = nproc if opts.launcher == "srun" else 1
    cpus = opts.cpus_per_task or (1 if opts.launcher == "srun" else nproc)
    values = {
        "template": opts.launcher,
        "nodes": str(opts.nodes),
        "nproc_per_node": str(nproc),
        "gpus_per_node": str(opts.gpus_per_node),
        "time": opts.time,
        "config_comment": config_abs,
        "job_name": _sbatch_value(opts.job_name or f"gpt2dist-{Path(cfg.run_dir).name}"),
        "ntasks_per_node": str(per_node_tasks),
        "cpus_per_task": str(cpus),
        "gres_line": f"#SBATCH --gres=gpu:{opts.gpus_per_node}\n" if opts.gpus_per_node else "",
        "partition_line": f"#SBATCH --partition={_sbatch_value(opts.partition)}\n" if opts.partition else "",
        "account_line": f"#SBATCH --account={_sbatch_value(opts.account)}\n" if opts.account else "",
        "workdir": _sbatch_value(workdir),
        "output": _sbatch_value(log_path(opts, workdir)),
        "grace": str(opts.grace),
        "python": shlex.quote(python),
        "config": shlex.quote(config_abs),
        "run_dir": shlex.quote(run_dir),
        "max_restarts": str(opts.max_restarts),
        "omp_threads": str(max(1, cpus if opts.launcher == "srun" else cpus // nproc)),
        "forward": FORWARD[opts.launcher],
        "overrides": "".join(" " + shlex.quote(o) for o in opts.overrides),
    }
    text = "".join((TEMPLATES / name).read_text(encoding="utf-8")
                   for name in ("header.sbatch", f"{opts.launcher}.sbatch", "footer.sbatch"))
    return _fill(text, values)


def _fill(text: str, values: dict[str, str]) -> str:
    def sub(match: re.Match) -> str:
        if match.group(1) not in values:
            raise KeyError(f"template placeholder {{{{{match.group(1)}}}}} has no value")
        return values[match.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", sub, text)


def _sbatch_value(value: str) -> str:
    """A value for an #SBATCH line, which sbatch parses itself, not a shell (src/sbatch/opt.c, _get_argument):
    a backslash escapes the next character, single or double quotes group, an unquoted # starts a comment, and
    $ or backticks mean nothing. So \\ " ' # are backslash-escaped and a value with blanks is double-quoted.
    Control characters never get here (one_line refused them): a newline would end the line."""
    escaped = re.sub(r"""([\\"'#])""", r"\\\1", value)
    return f'"{escaped}"' if any(c.isspace() for c in value) else escaped


def log_path(opts: SlurmOptions, workdir: str) -> str:
    """The --output value. Slurm expands %-patterns there (%j, %x; %% is a literal %), and a backslash anywhere
    turns the patterns off and is itself dropped (`man sbatch`, filename pattern; seen on Slurm 22.05)."""
    if opts.output:
        what, value, fix, path = "--log", opts.output, "use a path without one", opts.output
    else:
        what, value, fix = "the working directory", workdir, "give --log"
        path = os.path.join(workdir.replace("%", "%%"), "slurm-logs", "%x-%j.out")
    if "\\" in path:
        raise UserError(f"{what} {value!r} contains a backslash, which Slurm drops from output paths (and then "
                        f"ignores %j): {fix}")
    return path


CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}


def one_line(what: str, value: str) -> str:
    """Refuse a value that would not stay on its line of the batch script: a newline there ends an #SBATCH line
    (or the comment that names the config) and starts a shell command, and sbatch stops reading #SBATCH lines at
    the first command line. Shell quoting (shlex.quote) or #SBATCH escaping handles every other character."""
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        name = CONTROL_NAMES.get(bad, f"control character U+{ord(bad):04X}")
        raise UserError(f"{what} {value!r} contains {name}, which would break the batch script's lines: "
                        "remove it (rename the file or folder if it is in a path)")
    return value


def check_devices(cfg: RunConfig, opts: SlurmOptions) -> None:
    """CPU-only nodes (--gpus-per-node 0) cannot run what needs CUDA; refused here, not after the queue."""
    if opts.gpus_per_node:
        return
    if cfg.train.precision == "fp16":
        raise UserError("train.precision=fp16 needs CUDA GPUs but --gpus-per-node 0 asks for CPU ranks: use "
                        "train.precision=bf16 or fp32 on CPU nodes, or request GPUs with --gpus-per-node")
    if cfg.train.device == "cuda":
        raise UserError("train.device=cuda but --gpus-per-node 0 asks for CPU ranks: use train.device=cpu (or auto), "
                        "or request GPUs with --gpus-per-node")


def write_script(text: str, path: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_text(out, text, mode=0o755)


def submit(script: Path) -> str:
    """sbatch the script; returns the job id."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise UserError("sbatch not found: run this on a Slurm login node (or install slurm-client), or write the "
                        "script with -o and submit it there")
    proc = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        first = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise UserError(f"sbatch refused {script}: {first[0] if first else 'exit ' + str(proc.returncode)}")
    return proc.stdout.strip().split(";")[0]


def slurm_command(config_path: str, opts: SlurmOptions, out: str | None, do_submit: bool) -> str | None:
    """Render, write (to -o, or beside the run dir when submitting), and optionally submit."""
    text = render(config_path, opts)
    log_dir = Path(opts.output).parent if opts.output else Path.cwd() / "slurm-logs"
    if out is None and not do_submit:
        sys.stdout.write(text)
        return None
    path = write_script(text, out or str(log_dir / "job.sbatch"))
    print(f"wrote {path}")
    if "%" not in str(log_dir):  # Slurm cannot create the log's directory itself, also for a script sbatch'ed by hand
        log_dir.mkdir(parents=True, exist_ok=True)
    if not do_submit:
        return None
    job_id = submit(path)
    print(job_id)
    return job_id
