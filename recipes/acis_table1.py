"""`python -m recipes.acis_table1 cvppp|kitti`: the paper's Table 1 rows on the same data, each over several seeds.

Needs a finished run of the recipe (`python -m recipes.acis_cvppp ...`, default `runs/acis-<benchmark>`): its
pre-processing net, cVAE and init actor are shared by the rows. For every row in `--rows` and every seed in
`--seeds`, a run directory `RUN_DIR-<row>-s<seed>` trains the last stage (`--ablation <row> --seed <seed>`) with the
same budget (`--train-epochs`) and the same settings for every row, then evaluates; AC-NoSP trains its whole
pipeline (its cVAE has no State Pyramid). For every seed in `--init-seeds`, `RUN_DIR-init-s<seed>` trains its own
init stage from the base run's pre-processing net and cVAE, then AC with the rows' budget: the init actor's row is
then over the base run's seed and these, and a row "AC, own init stage" shows what a seed changes in both stages. Options after `--` go to every row's recipe command unchanged (e.g.
`-- --data-dir ../shared/realdata/CVPPP --profile cpu`): they must match the base run's.

The table (the init actor, then each row as mean ± sample standard deviation over its seeds, with the per-seed
values) is printed, written to `RUN_DIR/table1.md` and `RUN_DIR/table1.json`, and put as a note into
`RUN_DIR/results.json`, so that `python -m zoo.publish RUN_DIR` carries it to the model card.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
from pathlib import Path

from zoo.registry import markdown_row

ROWS = ("AC", "BL", "BL-Trunc", "AC-NoKL", "AC-NoSP")
NOTE_PREFIX = "Table 1 rows on the same split"


def row_dir(run_dir: Path, ablation: str, seed: int) -> Path:
    return run_dir.with_name(f"{run_dir.name}-{ablation.lower()}-s{seed}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.acis_table1", description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=("cvppp", "kitti"))
    parser.add_argument("--run-dir", type=Path, default=None, help="the base run (default runs/acis-<benchmark>)")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--row-seeds", nargs="+", default=[], metavar="ROW=S1,S2",
                        help="other seeds for some rows, e.g. AC-NoSP=1 (its whole pipeline costs far more)")
    parser.add_argument("--init-seeds", nargs="+", type=int, default=[],
                        help="seeds (other than the base run's) of init stages trained from the base run's cVAE, for "
                        "the init actor's spread over seeds")
    parser.add_argument("--train-epochs", type=int, default=None,
                        help="epochs of every row's last stage (default: the profile's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.epilog = "Options after -- go to every row's recipe command unchanged."
    return parser


def flag_value(command: str, flag: str) -> str | None:
    """The value a recorded command line gives `flag` (None where it does not give one)."""
    words = command.split()
    return words[words.index(flag) + 1] if flag in words[:-1] else None


def base_seed(command: str) -> int:
    """The --seed of the base run's recorded command (the recipe's default 0 without one)."""
    return int(flag_value(command, "--seed") or 0)


def moved_rows(run_dir: Path, seeds: dict[str, list[int]]) -> list[tuple[str, str]]:
    """(row directory, the --run-dir its recorded command names) for every row whose results were copied from the
    directory they ran in (e.g. rows without a critic, shared with an earlier base run): the card says where."""
    moved = []
    for row, row_seeds in seeds.items():
        for seed in row_seeds:
            path = row_dir(run_dir, row, seed)
            if row in ROWS + ("init",) and (path / "results.json").is_file():
                ran = flag_value(json.loads((path / "results.json").read_text())["command"], "--run-dir")
                if ran is not None and Path(ran).name != path.name:
                    moved.append((str(path), ran))
    return moved


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


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    own, recipe_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(own)
    args.recipe_args = recipe_args
    recipe = importlib.import_module(f"recipes.acis_{args.benchmark}")
    run_dir = args.run_dir or Path("runs") / f"acis-{args.benchmark}"
    if not (run_dir / "results.json").is_file():
        raise SystemExit(f"{run_dir}/results.json is missing: run `python -m recipes.acis_{args.benchmark}` first")
    budget = ["--train-epochs", str(args.train_epochs)] if args.train_epochs is not None else []
    seeds = {row: list(args.seeds) for row in args.rows}
    for override in args.row_seeds:
        row, _, values = override.partition("=")
        if row not in seeds or not values:
            raise SystemExit(f"--row-seeds {override}: want ROW=S1,S2 with ROW among --rows {args.rows}")
        seeds[row] = [int(value) for value in values.split(",")]
    results = json.loads((run_dir / "results.json").read_text())
    base = json.loads((run_dir / "metrics.json").read_text())
    first_seed = base_seed(results["command"])
    init_seeds = [seed for seed in args.init_seeds if seed != first_seed]
    for ablation in args.rows + ["init"] * bool(init_seeds):
        for seed in (init_seeds if ablation == "init" else seeds[ablation]):
            out = row_dir(run_dir, ablation, seed)
            if not (out / "results.json").is_file():
                shared = {"AC-NoSP": [], "init": ["--pretrained-run", str(run_dir), "--share-stages", "preproc", "cvae"]
                          }.get(ablation, ["--pretrained-run", str(run_dir)])
                run_row([sys.executable, "-m", f"recipes.acis_{args.benchmark}",
                         "--ablation", "AC" if ablation == "init" else ablation,
                         "--seed", str(seed), "--run-dir", str(out), "--threads", str(args.threads), *budget,
                         *shared, *args.recipe_args])

    names = [(metric["type"], metric["name"]) for metric in results["results"][0]["metrics"]]
    keys = {kind: key for key, (kind, _) in getattr(recipe, args.benchmark.upper()).metric_names.items()}
    own_init = {seed: json.loads((row_dir(run_dir, "init", seed) / "metrics.json").read_text()) for seed in init_seeds}
    init_runs = dict(sorted({first_seed: base, **own_init}.items()))  # per-seed values in seed order, as every row
    label = "init actor (before the last stage" + (")" if init_seeds else ", one run)")
    table = {label: {keys[kind]: [m["before_train_stage"][keys[kind]] for m in init_runs.values()] for kind, _ in names}}
    commands = {}
    if init_seeds:
        seeds["init actor"] = list(init_runs)
        commands["init"] = json.loads((row_dir(run_dir, "init", init_seeds[0]) / "results.json").read_text())["command"]
    for ablation in args.rows:
        per_seed = [json.loads((row_dir(run_dir, ablation, seed) / "metrics.json").read_text())
                    for seed in seeds[ablation]]
        table[ablation] = {keys[kind]: [m[keys[kind]] for m in per_seed] for kind, _ in names}
        commands[ablation] = json.loads(
            (row_dir(run_dir, ablation, seeds[ablation][0]) / "results.json").read_text())["command"]
    if init_seeds:
        # the base seed's AC row is trained from the base run's init stage, which that seed trained
        same_seed = row_dir(run_dir, "AC", first_seed) / "metrics.json"
        both = dict(sorted({**own_init, **({first_seed: json.loads(same_seed.read_text())} if same_seed.is_file() else {})
                            }.items()))
        seeds["AC, own init stage"] = list(both)
        table["AC, own init stage"] = {keys[kind]: [m[keys[kind]] for m in both.values()] for kind, _ in names}

    def cell(values: list[float]) -> str:
        mean, deviation = spread(values)
        if len(values) == 1:
            return f"{mean:.3f}"
        return f"{mean:.3f} ± {deviation:.3f} ({', '.join(f'{v:.3f}' for v in values)})"

    lines = [markdown_row(["row", *(name for _, name in names), "seeds"]), "|---" * (len(names) + 2) + "|"]
    for label, values in table.items():
        count = len(next(iter(values.values())))
        lines.append(markdown_row([label, *(cell(values[keys[kind]]) for kind, _ in names), str(count)]))
    text = "\n".join(lines)
    (run_dir / "table1.md").write_text(text + "\n")
    (run_dir / "table1.json").write_text(json.dumps({"seeds": seeds, "rows": table, "commands": commands}, indent=2))
    described = "; ".join(
        f"{label}: " + ", ".join(f"{name} {cell(values[keys[kind]])}" for kind, name in names)
        for label, values in table.items())
    origin = "the last stage of each row from this run's init stage" + (
        "; AC-NoSP with its own cVAE and init stage" if "AC-NoSP" in args.rows else "") + (
        "; the init actor and 'AC, own init stage' with an init stage per seed from this run's cVAE" if init_seeds else "")
    seed_text = "; ".join(f"{row} {values}" for row, values in seeds.items())
    note = (f"{NOTE_PREFIX} ({origin}; mean ± sample standard deviation over the seeds ({seed_text}), per-seed values "
            f"in brackets; every row the same epochs and actor learning rate): {described}. Row commands (first seed): " + "; ".join(f"{row}: `{command}`" for row, command in commands.items()) + ".")
    moved = moved_rows(run_dir, {**seeds, "init": init_seeds})
    if moved:
        note += (" Read from directories other than the ones they ran in (same settings, copied): "
                 + "; ".join(f"{where} ran in {ran}" for where, ran in moved) + ".")
    results["notes"] = [n for n in results["notes"] if not n.startswith(NOTE_PREFIX)] + [note]
    results["table1_command"] = "python -m recipes.acis_table1 " + " ".join(argv)
    results["table1"] = text
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(text)
    return text


if __name__ == "__main__":
    main()
