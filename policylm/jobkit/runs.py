"""What every job shares: argument parsing, the run directory and stage timing (Ray start-up is
``policylm.runtime``).

A job module defines a config dataclass and ``main(cfg) -> dict``; ``run_job`` turns
``--config F key=value ...`` into that config, and ``python -m policylm.jobs.<name>`` and the
``policylm <name>`` subcommand both go through it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from policylm.platform import console
from policylm.platform.config import ConfigError, config_to_dict, describe_config, load_config

log = logging.getLogger("policylm")
C = TypeVar("C")

def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)


def make_run_dir(job: str, out: str | None) -> Path:
    """``out`` when given, else ``runs/<job>-<timestamp>`` under the working directory."""
    if out:
        path = Path(out)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{job}-{stamp}"
        n = 1
        while path.exists():
            path, n = Path("runs") / f"{job}-{stamp}-{n}", n + 1
    path.mkdir(parents=True, exist_ok=True)
    return path


# keys that say where and how a run goes, not what it computes (a resumed run may change them);
# a dotted key is one of a section's
RUN_KEYS = ("out", "resume", "overwrite", "max_concurrent_trials", "torch_threads",
            "train.max_failures", "train.cpus_per_worker", "cpus_per_trial", "gpus_per_trial",
            "kill_at_step", "kill_after_episodes", "train.record_rows", "tracking")


def without_run_keys(config: dict) -> dict:
    """``config`` (a resolved config as a mapping) without :data:`RUN_KEYS`."""
    out = {k: v for k, v in config.items() if k not in RUN_KEYS}
    for key in RUN_KEYS:
        section, _, name = key.partition(".")
        if name and isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k != name}
    return out


def settings(cfg: Any) -> dict:
    """What a run computes: its resolved config without :data:`RUN_KEYS`."""
    return without_run_keys(config_to_dict(cfg))


def differences(old: dict, new: dict) -> list[str]:
    """The keys whose values differ, a section's as ``section.key``."""
    out = []
    for k in sorted(old.keys() | new.keys()):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict) and a != b:
            out += [f"{k}.{d}" for d in differences(a, b)]
        elif a != b:
            out.append(k)
    return out


def fingerprint(cfg: Any) -> str:
    """A hash of :func:`settings` (stored with the run, compared on ``resume``)."""
    import hashlib

    return hashlib.sha256(json.dumps(settings(cfg), sort_keys=True, default=str).encode()) \
        .hexdigest()[:16]


def open_run(job: str, cfg: Any) -> Path:
    """The run directory of ``cfg`` with its resolved ``config.yaml`` and ``run.json`` (job,
    fingerprint and a run id, new for each run and kept by ``resume``). A run never mixes with
    old outputs: a non-empty ``out=`` is refused unless ``overwrite`` (when it holds a policylm
    run, its contents are removed first; any other directory is refused) or ``resume`` (the
    stored settings must be the same; the job then keeps what the earlier attempt finished)."""
    import shutil
    import uuid

    from policylm.platform.config import ConfigError

    out = getattr(cfg, "out", "")
    resume, overwrite = getattr(cfg, "resume", False), getattr(cfg, "overwrite", False)
    if resume and overwrite:
        raise ConfigError("resume and overwrite: choose one (continue the run, or replace it)")
    path = Path(out) if out else None
    run_id: str | None = uuid.uuid4().hex[:8]
    if path is not None and path.is_dir() and any(path.iterdir()):
        if overwrite:
            if run_record(path) is None:  # out=. or a mistyped path: never a user's files
                where = str(path.resolve())
                raise ConfigError(
                    f"overwrite=true but out={out}{'' if where == out else f' ({where})'} "
                    "holds no policylm run "
                    "(no run.json naming a job), so it is not replaced; choose a new out= "
                    "directory, or empty this one yourself (nothing was deleted)")
            shutil.rmtree(path)
        elif resume:
            _check_same_run(job, cfg, path)
            # a run from before run ids keeps none: its checkpoints are under the old name
            run_id = (run_record(path) or {}).get("run_id")
        else:
            can = hasattr(cfg, "resume")
            raise ConfigError(
                f"out={out} already holds files (a {job} run or another); "
                + ("pass resume=true to continue it with the same settings, " if can else "")
                + "overwrite=true to replace it, or choose a new out= directory "
                "(nothing was changed)")
    elif resume:
        raise ConfigError(f"resume=true but out={out or '(not given)'} holds no run to "
                          "continue; drop resume or point out= at the run's directory")
    run_dir = make_run_dir(job, out)
    console.attach_run_dir(run_dir)
    save_config(cfg, run_dir)
    write_json(run_dir / "run.json", {"job": job, "fingerprint": fingerprint(cfg),
                                      **({"run_id": run_id} if run_id else {})})
    return run_dir


def run_record(path: Path) -> dict | None:
    """The ``run.json`` that :func:`open_run` wrote in ``path`` (a dict naming the job), or None
    when ``path`` holds none."""
    try:
        info = json.loads((Path(path) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("job"), str) \
        and info["job"] else None


def _check_same_run(job: str, cfg: Any, path: Path) -> None:
    """A ConfigError naming the settings that differ from the run stored in ``path``."""
    from policylm.platform.config import ConfigError

    stored = path / "run.json"
    if not stored.is_file() or not (path / "config.yaml").is_file():
        raise ConfigError(f"resume=true but out={path} holds no policylm run (no run.json); "
                          "use overwrite=true or a new out= directory")
    info = json.loads(stored.read_text())
    if info.get("job") != job:
        raise ConfigError(f"resume=true but out={path} holds a {info.get('job')} run, not a "
                          f"{job} run; choose the right directory")
    if info.get("fingerprint") != fingerprint(cfg):
        old = without_run_keys(yaml.safe_load((path / "config.yaml").read_text()) or {})
        diff = differences(old, settings(cfg))
        raise ConfigError(f"resume=true but the settings differ from the run in out={path} "
                          f"({', '.join(diff) or 'values'}); resume with the same settings, or "
                          "use overwrite=true or a new out= directory (nothing was changed)")


def save_config(cfg: Any, run_dir: Path) -> Path:
    """Write the resolved config as ``config.yaml`` in the run directory."""
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


_stage_depth = 0  # stages open in this process: a stage inside a stage is a detail


class Stages:
    """Times named stages; ``with stages("collect"): ...`` logs start, end and seconds (the
    console shows the outermost stages; stages inside them go to the log file only)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        global _stage_depth
        detail = {"detail": _stage_depth > 0}
        log.info("stage %s: start", name, extra=detail)
        t0 = time.perf_counter()
        _stage_depth += 1
        try:
            yield
        finally:
            _stage_depth -= 1
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        log.info("stage %s: done in %.1fs", name, self.seconds[name], extra=detail)


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return path


def flag_overrides(argv: list[str]) -> list[str]:
    """``--policy X`` / ``--policy=X`` / ``--max-batch-size 8`` -> ``policy=X`` /
    ``max_batch_size=8``: every config key also works as a flag (``--config`` and
    ``--help-config`` stay flags)."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg[2:].split("=", 1)[0]
        if not arg.startswith("--") or name in ("config", "help-config", "help", "verbose", ""):
            out.append(arg)
            if arg == "--config" and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
        elif "=" in arg:
            out.append(f"{name.replace('-', '_')}={arg.split('=', 1)[1]}")
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.append(f"{name.replace('-', '_')}={argv[i + 1]}")
            i += 1
        else:
            out.append(f"{name.replace('-', '_')}=true")  # a bare flag: a true boolean
        i += 1
    return out


def parse_args(job: str, cfg_cls: type[C], argv: list[str] | None) -> C:
    """``--config F key=value ...`` -> validated config (``--help-config`` lists every key)."""
    parser = argparse.ArgumentParser(
        prog=f"policylm {job}",
        description=(cfg_cls.__doc__ or "").strip().splitlines()[0],
        epilog="Overrides are key=value (dotted keys for sections); --help-config lists keys.",
    )
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument("--help-config", action="store_true", help="list config keys and exit")
    parser.add_argument("--verbose", action="store_true",
                        help="show the traceback of errors (also POLICYLM_DEBUG=1)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args, extra = parser.parse_known_args(flag_overrides(list(sys.argv[1:] if argv is None
                                                              else argv)))
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.help_config:
        for key, default, doc in describe_config(cfg_cls):
            print(f"{key:28s} {default:24s} {doc}")
        raise SystemExit(0)
    try:
        return load_config(cfg_cls, args.config, args.overrides)
    except ConfigError as err:
        parser.exit(2, f"policylm {job}: config error: {err}\n")


def run_job(job: str, cfg_cls: type[C], main: Callable[[C], dict], argv: list[str] | None = None,
            quiet: bool = True) -> dict:
    """Parse arguments, run ``main(cfg)`` and print where its outputs are. With ``quiet`` (a
    batch job's default) and without ``--verbose``, the terminal shows only the job's own lines
    and progress bars, and everything else goes to the run directory's ``console.log``
    (:mod:`policylm.platform.console`)."""
    setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv or os.environ.get("POLICYLM_DEBUG", "") not in ("", "0")
    cfg = parse_args(job, cfg_cls, argv)
    if verbose or not quiet:
        result = _call(job, main, cfg, verbose)
    else:
        with console.quiet(job) as con:
            try:
                result = _call(job, main, cfg, verbose=False)
            except SystemExit:  # a user error, already told: Ray's closing lines to the log
                _shutdown_ray()
                raise
            except Exception:
                import traceback

                text = traceback.format_exc()
                sys.stderr.write(text)  # the log file
                console.say(f"{text.rstrip()}\npolicylm {job}: failed; the full log is {con.path}")
                _shutdown_ray()
                raise SystemExit(1) from None
            _shutdown_ray()  # Ray's closing messages to the log file too
    if "run_dir" in result:
        console.say(f"policylm {job}: outputs in {result['run_dir']}", "stdout")
    return result


def _call(job: str, main: Callable[[C], dict], cfg: C, verbose: bool) -> dict:
    """``main(cfg)``; bad input (a user error) becomes one line naming what to fix, and exit 1."""
    from policylm.platform.errors import USER_ERRORS

    try:
        return main(cfg)
    except USER_ERRORS as err:  # bad input: what, why and how to fix, in one line
        if verbose:
            raise
        message = " ".join(str(err).split())
        if console.log_path() is not None:
            print(message, file=sys.stderr)  # into the log file too
        console.say(f"policylm {job}: error: {message} (--verbose shows the traceback)")
        raise SystemExit(1) from None


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
