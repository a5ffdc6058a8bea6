"""`python -m zoo.evaluate BENCHMARK ...`: score saved predictions with the official protocol.

Each benchmark's command lives in `zoo/evaluation/<benchmark>.py`, which defines
`add_arguments(parser)` and `run(args) -> dict`; this file only dispatches, then prints the results as JSON (and writes them with --json).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

BENCHMARKS = {
    "otb": ("zoo.evaluation.otb", "OTB one-pass evaluation: success AUC and precision@20"),
    "davis": ("zoo.evaluation.davis", "DAVIS 2016/2017 J, F and J&F (semi-supervised or unsupervised)"),
    "cvppp": ("zoo.evaluation.cvppp", "CVPPP leaf segmentation: SBD, FBD, DiC, |DiC|"),
    "kitti": ("zoo.evaluation.kitti", "KITTI car instances: MWCov, MUCov, AvgFP, AvgFN"),
    "vot-lt": ("zoo.evaluation.vot_lt", "VOT long-term (VOT2018-LT): tracking precision, recall and F-score"),
}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m zoo.evaluate", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    # Only the plug-in asked for is imported: some import torch, which costs seconds a CLI call should not pay.
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module_name, help_text) in BENCHMARKS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
        sub.set_defaults(_module=module_name)
        if name != chosen:
            continue
        try:
            importlib.import_module(module_name).add_arguments(sub)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            sub.set_defaults(_missing=True)
    args = parser.parse_args(argv)
    if getattr(args, "_missing", False):
        parser.error(f"the '{args.benchmark}' evaluation is not part of this version of the zoo")
    if args.json is not None:
        check_output_file(args.json, "--json", args.benchmark)
    results = importlib.import_module(args._module).run(args)
    print_results(results, args.json)
    return results


def check_output_file(path: Path, option: str, benchmark: str) -> None:
    """Stop before any scoring (a one-line error) when `path` cannot become a file: scores must not be lost to a
    traceback at the end."""
    if path.is_dir():
        _refuse(benchmark, f"{option} {path} is a directory; give a file name, such as {path / 'results.json'}")
    _check_creatable(path.parent, option, benchmark)


def check_output_dir(path: Path, option: str, benchmark: str) -> None:
    """As `check_output_file`, for an output folder (created if needed)."""
    if path.exists() and not path.is_dir():
        _refuse(benchmark, f"{option} {path} is a file, not a folder; give a folder for the output files")
    _check_creatable(path, option, benchmark)


def _check_creatable(folder: Path, option: str, benchmark: str) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        _refuse(benchmark, f"{option} {folder}: {existing} is a file, not a folder; choose another path")
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        _refuse(benchmark, f"{option} {folder}: cannot write into {existing} (permission denied); choose another path")


def _refuse(benchmark: str, message: str) -> None:
    raise SystemExit(f"python -m zoo.evaluate {benchmark}: error: {message}")


def print_results(results: dict, json_path: Path | None = None) -> None:
    """Print `results` as JSON and, given `json_path`, write them there too (parent folders are created)."""
    text = json.dumps(results, indent=2, default=float)
    print(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")


if __name__ == "__main__":
    main()
