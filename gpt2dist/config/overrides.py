"""Overrides as options: `--train.lr=3e-4` and `--train.lr 3e-4` mean `train.lr=3e-4` (litgpt and torchtitan
spell them so), wherever overrides are accepted (`gpt2dist train/launch/slurm/doctor/ds-config/prepare/config`,
`python -m gpt2dist.train`).

An option whose name holds a dot is a config key: no real option of ours has one (`--world-size`,
`--local_rank`, ...), so nothing else is rewritten. The rewritten overrides go to the end of the argument
list, so they never take the place of the config file positional and, as options usually do, win over a plain
`key=value` given for the same key.
"""

from __future__ import annotations

import re

from gpt2dist.errors import UserError

DOTTED_OPTION = re.compile(r"--([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:=(.*))?", re.DOTALL)


TRAINER_OPTION = re.compile(r"--([a-z]\w*_\w*)(?:=(.*))?", re.DOTALL)


def trainer_option(arg: str) -> re.Match | None:
    """`--learning_rate 5e-5`: a Trainer name (trainer_names.py) as an option, as run_clm.py takes it."""
    from gpt2dist.config.trainer_names import option_names

    match = TRAINER_OPTION.fullmatch(arg)
    return match if match is not None and match.group(1) in option_names() else None


def normalize_argv(argv: list[str]) -> list[str]:
    """argv with every `--a.b=v` / `--a.b v` turned into `a.b=v`, moved to the end (order kept)."""
    kept: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(argv):
        match = DOTTED_OPTION.fullmatch(argv[i]) or trainer_option(argv[i])
        if match is None:
            kept.append(argv[i])
            i += 1
            continue
        key, value = match.group(1), match.group(2)
        if value is None:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise UserError(f"override --{key} needs a value: --{key}=VALUE, --{key} VALUE or {key}=VALUE")
            value = argv[i + 1]
            i += 1
        moved.append(f"{key}={value}")
        i += 1
    return kept + moved
