"""`python -m recipes.benchmark NAME`: speed and memory measurements; stdout is one line, a JSON object.

Each benchmark lives in `recipes/benchmarks/<name>.py` (dashes become underscores) and defines
`add_arguments(parser)` and `run(args) -> dict`. Benchmarks, not timed unit tests, check speed targets.
Whatever else is printed while they run (download notices, progress, native libraries' output) goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import sys

import torch

BENCHMARKS = ["drlt", "acis", "davis-metrics", "proposals", "flow", "ftmu", "alba", "ivosw"]


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


@contextlib.contextmanager
def stdout_to_stderr():
    """Both Python's sys.stdout and file descriptor 1 (native code, child processes) point at stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m recipes.benchmark", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="name", required=True, metavar="NAME")
    for name in BENCHMARKS:
        module_name = "recipes.benchmarks." + name.replace("-", "_")
        sub = commands.add_parser(name)
        sub.set_defaults(_module=module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            sub.set_defaults(_missing=True)
            continue
        sub.description = (module.__doc__ or "").strip()
        module.add_arguments(sub)
    args = parser.parse_args(argv)
    if getattr(args, "_missing", False):
        parser.error(f"the '{args.name}' benchmark is not part of this version of the zoo")
    result = {"benchmark": args.name, "machine": machine()}
    with stdout_to_stderr():
        result.update(importlib.import_module(args._module).run(args))
    print(json.dumps(result, default=float), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
