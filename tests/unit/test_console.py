"""The quiet console: the job's own lines on the terminal, everything else in console.log."""

import subprocess
import sys
import textwrap
from pathlib import Path

JOB = textwrap.dedent('''
    import logging, os, subprocess, sys
    from dataclasses import dataclass
    from pathlib import Path

    from policylm.jobkit.runs import Stages, log, open_run, run_job
    from policylm.platform import console
    from policylm.platform.config import field

    @dataclass
    class Cfg:
        """A job for the test."""
        out: str = field("", doc="run directory")
        fail: str = field("", doc="'user' or 'bug': fail that way after the run directory")
        resume: bool = field(False, doc="continue the run in out=")

    def main(cfg):
        print("library line before the run directory")
        if cfg.fail == "no-run":  # a job that writes no run directory (stats only)
            console.say("stats line", "stdout")
            return {}
        run_dir = open_run("toy", cfg)
        stages = Stages()
        with stages("outer"):
            with stages("inner"):
                os.write(1, b"fd 1 line\\n")
                os.write(2, b"fd 2 line\\n")
                subprocess.run(["echo", "child process line"], check=True)
                logging.getLogger("ray.data").warning("library warning")
                log.info("job line")
                for _ in console.progress(range(3), desc="toy steps", unit="step"):
                    pass
        if cfg.fail == "user":
            from policylm.platform.config import ConfigError
            raise ConfigError("bad value: fix it like this")
        if cfg.fail == "bug":
            raise RuntimeError("boom")
        console.say("result line", "stdout")
        return {"run_dir": str(run_dir)}

    run_job("toy", Cfg, main, sys.argv[1:])
''')


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "toy.py"
    script.write_text(JOB)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=120, env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"})


def test_terminal_gets_the_job_lines_and_the_log_gets_the_rest(tmp_path):
    out = tmp_path / "run"
    proc = run(tmp_path, f"out={out}")
    assert proc.returncode == 0, proc.stderr
    log = (out / "console.log").read_text()
    library = ("library line before the run directory", "fd 1 line", "fd 2 line",
               "child process line", "library warning", "stage inner: start")
    for line in library:
        assert line in log and line not in proc.stdout + proc.stderr, line
    # the job's own lines: the run directory first, the outer stage, its lines, the bar
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"policylm toy: run directory {out}") and "console.log" in first
    for line in ("stage outer: start", "stage outer: done in", "job line", "toy steps"):
        assert line in proc.stderr, line
    assert proc.stdout.splitlines() == ["result line", f"policylm toy: outputs in {out}"]
    assert "job line" in log and "stage outer: start" in log  # the log has every line
    assert not list(tmp_path.glob("policylm-toy-*.log"))  # the early log moved into the run


def test_verbose_prints_everything_and_writes_no_log(tmp_path):
    out = tmp_path / "run"
    proc = run(tmp_path, f"out={out}", "--verbose")
    assert proc.returncode == 0, proc.stderr
    for line in ("fd 1 line", "child process line", "library warning", "stage inner: start"):
        assert line in proc.stdout + proc.stderr, line
    assert not (out / "console.log").exists()


def test_errors_reach_the_terminal_and_a_resumed_log_keeps_the_earlier_one(tmp_path):
    out = tmp_path / "run"
    user = run(tmp_path, f"out={out}", "fail=user")
    assert user.returncode == 1
    errors = [line for line in user.stderr.splitlines() if "error:" in line]
    assert errors == ["policylm toy: error: bad value: fix it like this "
                      "(--verbose shows the traceback)"]
    again = run(tmp_path, f"out={out}", "fail=user", "resume=true")
    assert again.returncode == 1
    log = (out / "console.log").read_text()
    assert log.count("--- policylm toy, ") == 2 and log.count("bad value") == 2
    bug = run(tmp_path, f"out={tmp_path / 'bug'}", "fail=bug")
    assert bug.returncode == 1
    assert "Traceback" in bug.stderr and "RuntimeError: boom" in bug.stderr
    assert f"the full log is {tmp_path / 'bug' / 'console.log'}" in bug.stderr
    assert "RuntimeError: boom" in (tmp_path / "bug" / "console.log").read_text()


def test_a_job_without_a_run_directory_names_its_log(tmp_path):
    proc = run(tmp_path, "fail=no-run")
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["stats line"]
    (log,) = tmp_path.glob("policylm-toy-*.log")
    assert f"messages are in {log}" in proc.stderr
    assert "library line before the run directory" in log.read_text()
