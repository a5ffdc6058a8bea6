"""`python -m zoo.publish RUN_DIR --name NAME [--repo-id ORG/NAME --push]`: a run directory -> a Hub-ready folder.

A run directory, as every recipe writes it:

    RUN_DIR/model/            save_pretrained output: config.json (with model_type) + model.safetensors
    RUN_DIR/results.json      what the run measured: {model, method, paper, paper_url, benchmark, command,
                              hardware, trained_on, results: [{task_type, task_name, dataset_name, dataset_type,
                              dataset_split, data, metrics: [{type, name, value}]}], paper_results, notes}
    RUN_DIR/*.png, *.csv      plots and per-sequence / per-image tables
    RUN_DIR/metrics.json      the full evaluation output

The folder written (default `zoo/weights/NAME`, the copy bundled with the zoo) holds the weights and config,
the model card rendered from `model_cards/NAME.md` with `model-index` metadata built from `results.json` alone
(so a card states only what the run measured), the plots and tables, and `zoo.json`, the registry entry.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from zoo.hub import CHECKPOINT_FILES, read_model_type
from zoo.paths import REPO_ROOT
from zoo.registry import ENTRY_FILE, WEIGHTS_DIR, markdown_row

MAX_CHECKPOINT_MB = 20
ARTIFACT_PATTERNS = ("*.png", "*.csv", "metrics.json", "results.json")
DEFAULT_ORG = "rl-vision-zoo"


def _format(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def results_table(results: list[dict]) -> str:
    lines = ["| data | split | metric | value |", "|---|---|---|---|"]
    for result in results:
        for metric in result["metrics"]:
            lines.append(
                markdown_row((result.get("data") or result["dataset_name"], result.get("dataset_split", ""),
                              metric.get("name", metric["type"]), _format(metric["value"])))
            )
    return "\n".join(lines)


def eval_results(run: dict) -> list:
    from huggingface_hub import EvalResult

    out = []
    for result in run["results"]:
        for metric in result["metrics"]:
            out.append(
                EvalResult(
                    task_type=result["task_type"],
                    task_name=result.get("task_name"),
                    dataset_type=result["dataset_type"],
                    dataset_name=result["dataset_name"],
                    dataset_split=result.get("dataset_split"),
                    dataset_args={"data": result["data"]} if result.get("data") else None,
                    metric_type=metric["type"],
                    metric_name=metric.get("name"),
                    metric_value=metric["value"],
                )
            )
    return out


def render_card(run: dict, name: str, template_path: Path, hub_repo: str, plots: list[str] = ()) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    card_data = ModelCardData(
        model_name=name,
        library_name="rl-vision-zoo",
        license="apache-2.0",
        tags=["reinforcement-learning", "computer-vision", "rl-vision-zoo", run["method"]],
        eval_results=eval_results(run),
    )
    template = template_path.read_text()
    if not template.lstrip().startswith("---"):
        template = "---\n{{ card_data }}\n---\n\n" + template
    notes = run.get("notes") or []
    card = ModelCard.from_template(
        card_data,
        template_str=template,
        name=name,
        hub_repo=hub_repo,
        results_table=results_table(run["results"]),
        paper_results_table=results_table(
            [{"dataset_split": "", **r, "metrics": r["metrics"]} for r in run.get("paper_results", [])]
        ),
        notes="\n".join(f"- {note}" for note in notes),
        plots="\n\n".join(f"![{Path(plot).stem}]({plot})" for plot in plots),
        **{key: value for key, value in run.items() if key not in {"notes", "results", "paper_results"}},
    )
    return str(card)


NO_BACKBONE = "none (no ImageNet backbone; trained from scratch)"


def backbone_weights_of(model_dir: Path) -> str:
    """Where the checkpoint's ImageNet backbone came from (`zoo.backbones` source), as its config records it."""
    config = json.loads((model_dir / "config.json").read_text())
    return config.get("backbone_weights", NO_BACKBONE)


def validate_run(run_dir: Path) -> dict:
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path} is missing: publish takes a run directory written by a recipe")
    for filename in CHECKPOINT_FILES:
        if not (run_dir / "model" / filename).is_file():
            raise FileNotFoundError(f"{run_dir / 'model' / filename} is missing (save the model with save_pretrained)")
    run = json.loads(results_path.read_text())
    for key in ("method", "paper", "benchmark", "command", "results"):
        if key not in run:
            raise ValueError(f"{results_path} lacks '{key}'")
    if not run["results"]:
        raise ValueError(f"{results_path} holds no measured results: a card reports only what its run measured")
    size_mb = (run_dir / "model" / "model.safetensors").stat().st_size / 2**20
    if size_mb > MAX_CHECKPOINT_MB:
        raise ValueError(f"{run_dir / 'model' / 'model.safetensors'} is {size_mb:.1f} MB; the zoo bundles at most "
                         f"{MAX_CHECKPOINT_MB} MB per checkpoint")
    return run


def publish(
    run_dir: Path,
    name: str,
    *,
    repo_id: str | None = None,
    out: Path | None = None,
    card_template: Path | None = None,
    push: bool = False,
) -> Path:
    run_dir = Path(run_dir)
    run = validate_run(run_dir)
    model_type = read_model_type(run_dir / "model")
    repo_id = repo_id or f"{DEFAULT_ORG}/{name}"
    out = Path(out) if out is not None else WEIGHTS_DIR / name
    card_template = Path(card_template) if card_template else REPO_ROOT / "model_cards" / f"{name}.md"
    if not card_template.is_file():
        raise FileNotFoundError(f"{card_template} is missing: write the model card template for '{name}' first")

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for filename in CHECKPOINT_FILES:
        shutil.copy2(run_dir / "model" / filename, out / filename)
    for pattern in ARTIFACT_PATTERNS:
        for path in sorted(run_dir.glob(pattern)):
            shutil.copy2(path, out / path.name)
    plots = sorted(p.name for p in out.glob("*.png"))
    run = {**run, "backbone_weights": backbone_weights_of(run_dir / "model")}
    (out / "README.md").write_text(render_card(run, name, card_template, repo_id, plots).rstrip() + "\n")
    entry = {
        "name": name,
        "model_type": model_type,
        "method": run["method"],
        "paper": run["paper"],
        "paper_url": run.get("paper_url", ""),
        "benchmark": run["benchmark"],
        "hub_repo": repo_id,
        "revision": None,
        "recipe": run["command"],
        "card": str(card_template.relative_to(REPO_ROOT)) if card_template.is_relative_to(REPO_ROOT) else str(card_template),
        "results": run["results"],
        "trained_on": run.get("trained_on", ""),
        "hardware": run.get("hardware", ""),
        "backbone_weights": run["backbone_weights"],
    }
    (out / ENTRY_FILE).write_text(json.dumps(entry, indent=2) + "\n")
    if push:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        commit = api.upload_folder(folder_path=str(out), repo_id=repo_id, commit_message=f"Publish {name}")
        entry["revision"] = commit.oid
        (out / ENTRY_FILE).write_text(json.dumps(entry, indent=2) + "\n")
        print(f"pushed {repo_id} at revision {commit.oid} (pinned in {out / ENTRY_FILE})")
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m zoo.publish", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory written by a recipe")
    parser.add_argument("--name", required=True, help="registry name, e.g. drlt-otb")
    parser.add_argument("--repo-id", default=None, help=f"Hub repo (default {DEFAULT_ORG}/NAME)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default zoo/weights/NAME)")
    parser.add_argument("--card-template", type=Path, default=None, help="default model_cards/NAME.md")
    parser.add_argument("--push", action="store_true", help="upload the folder to the Hub with huggingface_hub")
    args = parser.parse_args(argv)
    out = publish(args.run_dir, args.name, repo_id=args.repo_id, out=args.out,
                  card_template=args.card_template, push=args.push)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
