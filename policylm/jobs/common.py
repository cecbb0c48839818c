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
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

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


def save_config(cfg: Any, run_dir: Path) -> Path:
    """Write the resolved config as ``config.yaml`` in the run directory."""
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


class Stages:
    """Times named stages; ``with stages("collect"): ...`` logs start, end and seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("stage %s: start", name)
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        log.info("stage %s: done in %.1fs", name, self.seconds[name])


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
        if not arg.startswith("--") or name in ("config", "help-config", "help", ""):
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


def run_job(job: str, cfg_cls: type[C], main: Callable[[C], dict], argv: list[str] | None = None
            ) -> dict:
    """Parse arguments, run ``main(cfg)`` and print where its outputs are."""
    from policylm.platform.errors import USER_ERRORS

    setup_logging()
    cfg = parse_args(job, cfg_cls, argv)
    try:
        result = main(cfg)
    except USER_ERRORS as err:  # bad input: say what and how to fix, without a traceback
        print(f"policylm {job}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from err
    if "run_dir" in result:
        print(f"policylm {job}: outputs in {result['run_dir']}")
    return result
