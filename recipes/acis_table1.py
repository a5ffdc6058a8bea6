"""`python -m recipes.acis_table1 cvppp|kitti`: the paper's Table 1 rows, measured on the same data as the AC run.

Needs the AC run of the recipe (`python -m recipes.acis_cvppp`, i.e. `runs/acis-cvppp`). Each row in `--rows`
that has no run directory yet is trained and evaluated: BL, BL-Trunc and AC-NoKL start from the AC run's
init stage (`--pretrained-run`), AC-NoSP runs the whole pipeline (its cVAE is trained without the State
Pyramid). Then the table (the init actor, AC and each row) is printed, written to `RUN_DIR/table1.md`, and put
as a note into `RUN_DIR/results.json`, so that `python -m zoo.publish RUN_DIR` carries it to the model card.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

from zoo.registry import markdown_row

ROWS = ("BL", "BL-Trunc", "AC-NoKL", "AC-NoSP")
NOTE_PREFIX = "Table 1 rows on the same split"
TRAINER_OPTIONS = {"--accelerator": "cpu", "--devices": "1", "--num-nodes": "1", "--strategy": "auto"}


def row_dir(run_dir: Path, ablation: str) -> Path:
    return run_dir.with_name(f"{run_dir.name}-{ablation.lower()}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.acis_table1", description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=("cvppp", "kitti"))
    parser.add_argument("--run-dir", type=Path, default=None, help="the AC run (default runs/acis-<benchmark>)")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--threads", type=int, default=1)
    for option, default in TRAINER_OPTIONS.items():
        parser.add_argument(option, default=default, help="passed to each row's run (Lightning Trainer)")
    return parser


def run_row(command: list[str]) -> None:
    """A process per row: under DDP the recipe launches its ranks from its own command line."""
    process = subprocess.Popen(command)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.wait()  # the row got the same Ctrl-C and prints how to resume it
        print("interrupted; run the same command again to resume", file=sys.stderr)
        raise SystemExit(130) from None
    if code != 0:
        raise SystemExit(f"the row `{' '.join(command[1:])}` stopped (see above); re-run this command to resume it")


def main(argv: list[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    recipe = importlib.import_module(f"recipes.acis_{args.benchmark}")
    run_dir = args.run_dir or Path("runs") / f"acis-{args.benchmark}"
    if not (run_dir / "results.json").is_file():
        raise SystemExit(f"{run_dir}/results.json is missing: run `python -m recipes.acis_{args.benchmark}` first")
    trainer = []  # only what differs from the defaults, so the rows' recorded commands stay short
    for option, default in TRAINER_OPTIONS.items():
        value = getattr(args, option[2:].replace("-", "_"))
        trainer += [option, value] if value != default else []
    for ablation in args.rows:
        out = row_dir(run_dir, ablation)
        if not (out / "results.json").is_file():
            shared = [] if ablation == "AC-NoSP" else ["--pretrained-run", str(run_dir)]
            run_row([sys.executable, "-m", f"recipes.acis_{args.benchmark}", "--ablation", ablation, "--run-dir",
                     str(out), "--threads", str(args.threads), *trainer, *shared])

    results = json.loads((run_dir / "results.json").read_text())
    names = [(metric["type"], metric["name"]) for metric in results["results"][0]["metrics"]]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = [("init actor (before the RL stage)", metrics["before_train_stage"], "")]
    rows.append((f"{results['ablation']} (this run)", metrics, results["command"]))
    for ablation in args.rows:
        out = row_dir(run_dir, ablation)
        row_results = json.loads((out / "results.json").read_text())
        rows.append((ablation, json.loads((out / "metrics.json").read_text()), row_results["command"]))
    keys = {kind: key for key, (kind, _) in getattr(recipe, args.benchmark.upper()).metric_names.items()}
    lines = [markdown_row(["row", *(name for _, name in names), "command"]), "|---" * (len(names) + 2) + "|"]
    for label, values, command in rows:
        cells = [label] + [f"{values[keys[kind]]:.4g}" for kind, _ in names] + [f"`{command}`" if command else ""]
        lines.append(markdown_row(cells))
    table = "\n".join(lines)
    (run_dir / "table1.md").write_text(table + "\n")

    def described(label, values, command):
        measured = ", ".join(f"{name} {values[keys[kind]]:.4g}" for kind, name in names)
        return f"{label}: {measured}" + (f" (`{command}`)" if label in args.rows else "")  # the card shows this run's

    origins = [f"{', '.join(row for row in args.rows if row != 'AC-NoSP')} from this run's init stage"]
    if "AC-NoSP" in args.rows:
        origins.append("AC-NoSP with its own cVAE and init stage")
    note = f"{NOTE_PREFIX} ({'; '.join(origins)}): " + "; ".join(described(*row) for row in rows) + "."
    results["notes"] = [n for n in results["notes"] if not n.startswith(NOTE_PREFIX)] + [note]
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(table)
    return table


if __name__ == "__main__":
    main()
