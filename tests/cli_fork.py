"""Run many `python -m MODULE ARGS` command lines as real, separate processes without paying the imports each time.

Started once as `python tests/cli_fork.py JOBS.json`: it imports the modules the CLI reaches (torch, transformers,
gpt2dist's trainer, ...) once, then `os.fork()`s one child per job. The child becomes what `python -m MODULE ARGS`
would be in the job's folder: its own cwd, fds 0/1/2 (stdin /dev/null, stdout and stderr to the job's files),
sys.argv and sys.path[0] as `-m` sets them, the module executed as `__main__` by runpy (as `-m` does), and the
interpreter's own exit: an uncaught exception prints its traceback and exits 1, SystemExit gives its code,
non-daemon threads and then atexit handlers are waited for, the standard streams flushed. Then the child ends
with os._exit: the interpreter's teardown of its modules (0.3-0.4 s per job with torch loaded, most of a failing
command's time) is skipped, so only the __del__ of objects still alive at exit does not run. Each child starts
from the parent's state, so no job sees another's (module caches, environment, cwd). The parent runs no torch op
and starts no thread: fork is safe.

JOBS.json: {"workers": N, "timeout_s": S, "preload": [module, ...], "jobs": [{"id", "module", "args", "cwd",
"stdout", "stderr"}, ...], "results": path, "preload_output": path}. The parent writes {"exit": {id: status},
"seconds": {id: wall time}} to `results` (a negative status: killed by that signal; a job past timeout_s gets
SIGALRM), and what importing the preloads printed to `preload_output`. With "serve": true instead of "jobs", it
takes one job per line of stdin and answers each when it ended (WarmCli, for tests whose commands follow one
another).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import runpy
import signal
import sys
import threading
import time
from pathlib import Path


def preload(modules: list[str], output: str) -> None:
    """Import once in the parent; whatever the imports print goes to `output` (the caller fails on any of it, as a
    case would have failed on a warning printed by an import in its own process)."""
    saved = os.dup(2), os.dup(1)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 2)
        os.dup2(saved[1], 1)
        for f in (fd, *saved):
            os.close(f)


def become(job: dict, timeout_s: int) -> None:
    """In the child: the process state `python -m MODULE ARGS` started in job["cwd"] would have."""
    os.chdir(job["cwd"])
    for target, path, flags in ((0, os.devnull, os.O_RDONLY), (1, job["stdout"], os.O_WRONLY | os.O_CREAT),
                                (2, job["stderr"], os.O_WRONLY | os.O_CREAT)):
        fd = os.open(path, flags, 0o644)
        os.dup2(fd, target)
        os.close(fd)
    sys.argv = [job["module"], *job["args"]]  # runpy sets argv[0] to the module's file, as -m does
    sys.path[0] = os.getcwd()  # -m puts the working directory first on the path
    # -m runs the module fresh as __main__; a copy already imported here would make runpy warn (one more line)
    sys.modules.pop(job["module"], None)
    signal.alarm(timeout_s)  # default action: the child dies of SIGALRM, the parent reports it


def run_as_main(module: str) -> int:
    """Run `module` as `python -m` runs it; the exit status the interpreter would give (a KeyboardInterrupt ends
    the process by SIGINT, as CPython does)."""
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return (exc.code or 0) & 0xFF
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException as exc:  # noqa: BLE001 -- the interpreter reports any exception this way
        sys.excepthook(type(exc), exc, exc.__traceback__)
        if isinstance(exc, KeyboardInterrupt):
            finish()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        return 1
    return 0


def finish() -> None:
    """What the interpreter does at exit before tearing itself down: join non-daemon threads, run atexit."""
    threading._shutdown()  # the call Py_FinalizeEx makes first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream, as at a real exit
            stream.flush()


def run_all(spec: dict) -> dict | None:
    """Fork the jobs, `workers` at a time, and collect their exit status. Returns the job in a child, None in the
    parent once every job has ended."""
    preload(spec.get("preload", []), spec["preload_output"])
    # Objects the imports made stay out of the children's collections: without this a child's exit walks (and so
    # copies, page by page) the parent's whole heap -- 1.3 s per case with torch loaded, 0.3 s with it.
    gc.freeze()
    pending, running, results, seconds = list(spec["jobs"]), {}, {}, {}
    while pending or running:
        while pending and len(running) < spec["workers"]:
            job = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                return job
            running[pid] = job["id"], time.perf_counter()
        pid, status = os.wait()
        job_id, started = running.pop(pid)
        results[job_id] = os.waitstatus_to_exitcode(status)
        seconds[job_id] = round(time.perf_counter() - started, 3)
    with open(spec["results"], "w", encoding="utf-8") as out:
        json.dump({"exit": results, "seconds": seconds}, out)
    return None


def serve(spec: dict) -> dict | None:
    """One job per line of stdin, in order (a test's commands depend on each other): fork it, wait, answer one
    line {"exit": status, "seconds": wall time} on stdout. A job with "detach": true (a run a test will signal)
    answers {"pid": pid} first and runs in its own session, as Popen(start_new_session=True) starts it. Returns the
    job in a child, None at end of input."""
    preload(spec.get("preload", []), spec["preload_output"])
    gc.freeze()
    for line in sys.stdin:
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            if job.get("detach"):
                os.setsid()
            return job
        if job.get("detach"):
            print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "seconds": time.perf_counter() - started}),
              flush=True)
    return None


class WarmCli:
    """The client of `serve`: `run(*args)` is `python -m gpt2dist.cli ARGS` as helpers.run_cli runs it (in `env`,
    default the environment of the moment the harness started, plus PYTHONUNBUFFERED), forked from a process that
    imported `preload` once."""

    def __init__(self, work: Path, preload: list[str], timeout_s: int = 300, env: dict[str, str] | None = None):
        import subprocess

        self.work, self.timeout_s, self.count = work, timeout_s, 0
        spec = {"serve": True, "timeout_s": timeout_s, "preload": preload, "preload_output": str(work / "preload.txt")}
        (work / "serve.json").write_text(json.dumps(spec), encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, __file__, str(work / "serve.json")], cwd=work, text=True,
                                     env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)

    def send(self, args: tuple[str, ...], cwd: Path | None, detach: bool = False) -> tuple[Path, Path]:
        self.count += 1
        out, err = self.work / f"{self.count}.out", self.work / f"{self.count}.err"
        job = {"id": str(self.count), "module": "gpt2dist.cli", "args": list(args), "cwd": str(cwd or os.getcwd()),
               "stdout": str(out), "stderr": str(err), "detach": detach}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return out, err

    def answer(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"the harness died: {(self.work / 'preload.txt').read_text(errors='replace')}"
        return json.loads(line)

    def __call__(self, *args: str, cwd: Path | None = None, check: bool = True):
        return self.run(*args, cwd=cwd, check=check)

    def start(self, *args: str, cwd: Path | None = None) -> WarmJob:
        """`gpt2dist ARGS` started, not waited for: a run the test signals (SIGSTOP, SIGKILL of it or its group).
        No other command can run until it has ended and been waited for."""
        out, err = self.send(args, cwd, detach=True)
        return WarmJob(self, self.answer()["pid"], err)

    def run(self, *args: str, cwd: Path | None = None, check: bool = True):
        import subprocess

        out, err = self.send(args, cwd)
        code = self.answer()["exit"]
        proc = subprocess.CompletedProcess(["python", "-m", "gpt2dist.cli", *args], code,
                                           out.read_text(errors="replace"), err.read_text(errors="replace"))
        if check and code != 0:
            raise AssertionError(f"gpt2dist {' '.join(args)} exited {code}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()


class WarmJob:
    """A started job as much like a subprocess.Popen as the kill tests use: pid, poll, send_signal, wait."""

    def __init__(self, cli: WarmCli, pid: int, stderr: Path):
        self.cli, self.pid, self.stderr_path, self.returncode = cli, pid, stderr, None

    def poll(self) -> int | None:
        from ranks import alive  # a zombie has ended: the harness reaps it

        if self.returncode is None and not alive(self.pid):
            self.wait()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            from ranks import alive

            while alive(self.pid):  # once it has ended, the harness answers at once
                assert deadline is None or time.monotonic() < deadline, f"job {self.pid} runs past {timeout} s"
                time.sleep(0.01)
            self.returncode = self.cli.answer()["exit"]
        return self.returncode

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        SPEC = json.load(f)
    JOB = serve(SPEC) if SPEC.get("serve") else run_all(SPEC)
    if JOB is not None:  # the child, with nothing of the harness left on its stack
        become(JOB, SPEC["timeout_s"])
        del SPEC
        STATUS = run_as_main(JOB["module"])
        finish()
        os._exit(STATUS)
