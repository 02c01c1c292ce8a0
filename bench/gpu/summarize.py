"""run.sh's last stage: the stage table, the GPU test counts and the benchmark table -> summary.md + results.json.

    python bench/gpu/summarize.py LOGS_DIR OUT_DIR

Reads what the stages left in LOGS_DIR (stages.tsv, gpu-tests.xml, bench-*.json, imports.log, check.log); any of
them may be missing (a stage that failed or was skipped), and the summary says so instead of failing.
"""

from __future__ import annotations

import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def read_stages(logs: Path) -> list[dict[str, str]]:
    path = logs / "stages.tsv"
    if not path.is_file():
        return []
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    return [{"stage": r[0], "status": r[1], "seconds": r[2], "exit": r[3]} for r in rows if len(r) == 4]


def read_tests(logs: Path) -> dict[str, Any]:
    """Counts and the failed/skipped test names (first line of the reason) from pytest's JUnit XML."""
    path = logs / "gpu-tests.xml"
    if not path.is_file():
        return {"found": False}
    root = ET.parse(path).getroot()
    cases = list(root.iter("testcase"))
    result: dict[str, Any] = {"found": True, "total": len(cases), "passed": 0, "failed": [], "skipped": [],
                              "seconds": sum(float(c.get("time", 0)) for c in cases)}
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}".rsplit(".", 1)[-1]
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            result["passed"] += 1
            continue
        reason = (outcome.get("message") or outcome.text or "").strip().splitlines()
        entry = {"test": name, "reason": reason[0][:300] if reason else ""}
        result["skipped" if outcome.tag == "skipped" else "failed"].append(entry)
    return result


def read_bench(logs: Path) -> dict[str, Any]:
    return {path.stem.removeprefix("bench-"): read_json(path) for path in sorted(logs.glob("bench-*.json"))}


def read_json(path: Path) -> dict[str, Any]:
    """A stage's JSON, or {} when the stage left none (failed, skipped) or a partial one."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def read_env(logs: Path) -> dict[str, Any]:
    path = logs / "imports.log"
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    start, end = text.find("{"), text.rfind("}")
    try:
        return json.loads(text[start:end + 1]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}


def fmt_predicted(res: dict[str, Any]) -> str:
    """The doctor's one-GPU tokens/s range for this run, and the measured figure's place in it."""
    pred = res.get("predicted") or {}
    if "tokens_per_s_typical" not in pred or not res.get("median"):
        return "n/a"
    return (f"{pred['tokens_per_s_low']:,.0f}-{pred['tokens_per_s_high']:,.0f} "
            f"({res['median'] / pred['tokens_per_s_typical']:.2f}x typical)")


def fmt_compiled(res: dict[str, Any]) -> str:
    graphs = res.get("compiled_graphs")
    return "n/a" if graphs is None else ("no (eager)" if graphs == 0 else f"yes ({graphs} graphs)")


def markdown(stages, tests, bench, env, check_lines, matmul=None, ce=None) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"# gpt2dist GPU kit: {env.get('gpu') or 'GPU unknown'}, {when}", ""]
    if env:
        lines.append("torch {torch} (CUDA {cuda}), transformers {transformers}, deepspeed {deepspeed} "
                     "(accelerator {deepspeed_accelerator}), datasets {datasets}, python {python}".format_map(
                         {k: env.get(k, "?") for k in ("torch", "cuda", "transformers", "deepspeed",
                                                       "deepspeed_accelerator", "datasets", "python")}))
        lines.append("")
    lines += ["## Stages", "", "| stage | status | seconds |", "| --- | --- | ---: |"]
    lines += [f"| {s['stage']} | {s['status']} | {s['seconds']} |" for s in stages]
    total = sum(int(s["seconds"]) for s in stages if s["seconds"].isdigit())
    lines += [f"| all | | {total} |", ""]
    if check_lines:
        problems = [line for line in check_lines if not line.startswith("unverified")]
        lines += ["check_wheels.py --installed: " + ("; ".join(problems) if problems else "(no output)"), ""]
    if tests.get("found"):
        lines += [f"## GPU tests: {tests['passed']} passed, {len(tests['failed'])} failed, "
                  f"{len(tests['skipped'])} skipped ({tests['seconds']:.0f} s of test time)", ""]
        lines += [f"- FAILED {t['test']}: {t['reason']}" for t in tests["failed"]]
        lines += [f"- skipped {t['test']}: {t['reason']}" for t in tests["skipped"]]
    else:
        lines += ["## GPU tests: no result (the tests stage failed or was skipped; see logs.tar.gz)"]
    lines += ["", "## GPT-2 124M (12x768, T=1024, vocab 50,257), bf16, one GPU", ""]
    if not bench:
        lines.append("no benchmark result (see logs.tar.gz)")
    else:
        ceiling = (matmul or {}).get("ceiling_tflops")
        lines += ["| variant | trainer | micro | median tokens/s | doctor predicted | MFU | of matmul ceiling | "
                  "compiled | peak GiB | setup s | last loss |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
        for variant, data in bench.items():
            for trainer, res in data.get("results", {}).items():
                mfu = res.get("mfu")
                peak = res.get("peak_mem_gib")
                loss = res.get("final_loss")
                tflops = res.get("median", 0) * res.get("flops_per_token", 0) / 1e12
                of_ceiling = f"{tflops / ceiling:.1%}" if ceiling and tflops else "n/a"
                lines.append(f"| {variant} | {trainer} | {data.get('spec', {}).get('micro', '?')} | "
                             f"{res.get('median', float('nan')):,.0f} | {fmt_predicted(res)} | "
                             f"{'n/a' if mfu is None else f'{mfu:.1%}'} | {of_ceiling} | {fmt_compiled(res)} | "
                             f"{'n/a' if peak is None else f'{peak:.1f}'} | "
                             f"{res.get('setup_s', 0):.0f} | {'n/a' if loss is None else f'{loss:.3f}'} |")
        for variant, data in bench.items():
            results = data.get("results", {})
            if {"gpt2dist", "hf_trainer"} <= set(results) and results["hf_trainer"].get("median"):
                ratio = results["gpt2dist"]["median"] / results["hf_trainer"]["median"]
                lines += ["", f"{variant}: gpt2dist / HF Trainer (same process) = {ratio:.2f}x tokens/s"]
        spec = next(iter(bench.values())).get("spec", {})
        lines += ["", f"{spec.get('steps')} steps of {spec.get('micro')} x {spec.get('block_size')} tokens; median of "
                  f"{spec.get('window')}-step windows after {spec.get('warmup')} warm-up steps (compilation "
                  "included there); MFU = tokens/s x (6N + 12LHQT) / the bf16 peak of gpt2dist/observe/metrics.py."]
    if matmul:
        of_peak = (f" = {matmul['ceiling_of_peak']:.0%} of the datasheet peak {matmul['peak_tflops']:.0f}"
                   if matmul.get("ceiling_of_peak") else "")
        lines += ["", f"matmul ceiling (bench/gpu/matmul_ceiling.py): {matmul.get('ceiling_tflops', 0):.0f} TFLOP/s "
                  f"{matmul.get('dtype', '')}{of_peak}"]
    if ce.get("rows") if ce else False:
        lines += ["", "## Chunked cross-entropy (bench/chunked_ce.py)", "",
                  "| variant | peak MiB | ms per fwd+bwd |", "| --- | ---: | ---: |"]
        lines += [f"| {r['variant']} | {r['peak_mib']:,.0f} | {r['ms']:.1f} |" for r in ce["rows"]]
        if ce.get("summary"):
            lines += ["", ce["summary"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    logs, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    stages, tests, bench, env = read_stages(logs), read_tests(logs), read_bench(logs), read_env(logs)
    check_file = logs / "check.log"
    check_lines = check_file.read_text(encoding="utf-8", errors="replace").splitlines() if check_file.is_file() else []
    matmul, ce = read_json(logs / "matmul.json"), read_json(logs / "chunked-ce.json")
    (out / "summary.md").write_text(markdown(stages, tests, bench, env, check_lines, matmul, ce), encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"env": env, "stages": stages, "tests": tests, "check": check_lines,
                                                  "bench": bench, "matmul": matmul, "chunked_ce": ce}, indent=1),
                                      encoding="utf-8")
    print((out / "summary.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
