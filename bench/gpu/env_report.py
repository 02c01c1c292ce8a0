"""What the GPU machine runs the kit with: versions, DeepSpeed's accelerator, the GPU, where gpt2dist imports from.

An import failure here (a missing requirement, a version clash) names the package before the tests do; exit 1
then, or when no CUDA device is visible."""

from __future__ import annotations

import importlib
import json
import platform
import sys


def main() -> None:
    import torch

    report = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for name in ("transformers", "tokenizers", "accelerate", "datasets", "pyarrow", "fsspec", "huggingface_hub",
                 "pydantic", "typing_extensions", "deepspeed", "gpt2dist"):
        try:
            module = importlib.import_module(name)
            report[name] = getattr(module, "__version__", "?")
        except Exception as exc:  # noqa: BLE001 - report every failure, not only the first
            report[name] = f"IMPORT FAILED: {type(exc).__name__}: {exc}"
    try:  # a failed deepspeed import is one more line of the report, not a traceback that hides the rest
        from deepspeed.accelerator import get_accelerator

        report["deepspeed_accelerator"] = get_accelerator()._name
    except Exception as exc:  # noqa: BLE001
        report["deepspeed_accelerator"] = f"IMPORT FAILED: {type(exc).__name__}: {exc}"
    try:
        report["gpt2dist_file"] = importlib.import_module("gpt2dist").__file__
    except Exception as exc:  # noqa: BLE001
        report["gpt2dist_file"] = f"IMPORT FAILED: {type(exc).__name__}: {exc}"
    print(json.dumps(report, indent=1))
    if report["gpu"] is None:
        print("no CUDA device visible: the GPU tests will skip and the benchmark fail", file=sys.stderr)
    sys.exit(1 if report["gpu"] is None or any(str(v).startswith("IMPORT FAILED") for v in report.values()) else 0)


if __name__ == "__main__":
    main()
