"""`python -m zoo.publish RUN_DIR --name NAME [--out DIR] [--force] [--push]`: a run directory -> a Hub-ready folder.

A run directory, as every recipe writes it:

    RUN_DIR/model/            save_pretrained output: config.json (with model_type) + model.safetensors
    RUN_DIR/results.json      what the run measured: {model, method, paper, paper_url, benchmark, command,
                              hardware, trained_on, results: [{task_type, task_name, dataset_name, dataset_type,
                              dataset_split, data, metrics: [{type, name, value}]}], paper_results, notes}
    RUN_DIR/*.png, *.csv      plots and per-sequence / per-image tables
    RUN_DIR/metrics.json      the full evaluation output

The folder written (default `RUN_DIR/publish/NAME`) holds the weights and config, the model card rendered from
`model_cards/NAME.md` with `model-index` metadata built from `results.json` alone (so a card states only what the
run measured), the plots and tables, and `zoo.json`, the registry entry with the weights' SHA-256.

Nothing is lost: an existing `--out` is replaced only when it is a previous publish of the same name and `--force`
is given (so a checkpoint bundled in `zoo/weights/NAME` is replaced only on purpose), and then by renaming a
completely written sibling folder into place. `--push` checks the Hub login before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

from zoo.hub import AUTH_HINT, CHECKPOINT_FILES, file_sha256, hub_reachable, read_model_type
from zoo.paths import REPO_ROOT
from zoo import registry
from zoo.registry import ENTRY_FILE, markdown_row

MAX_CHECKPOINT_MB = 20
ARTIFACT_PATTERNS = ("*.png", "*.csv", "metrics.json", "results.json")
DEFAULT_ORG = "rl-vision-zoo"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")


class PublishError(ValueError):
    """Publishing was refused or failed; the message says what was (not) written and what to do."""


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


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise PublishError(f"--name {name!r} is not a registry name: lower-case letters, digits and '-', starting "
                           "with a letter or digit (e.g. drlt-otb); nothing was written")


def previous_publish(folder: Path) -> str | None:
    """The name in `folder`/zoo.json when the folder is the output of an earlier publish, else None."""
    try:
        entry = json.loads((folder / ENTRY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return entry.get("name") if isinstance(entry, dict) else None


def check_out(out: Path, name: str, force: bool) -> None:
    """Refuse any output that would lose something: replacing is allowed only for a previous publish of `name`
    with `force`."""
    if out.exists() and not out.is_dir():
        raise PublishError(f"--out {out} is a file; nothing was written: give a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    found = previous_publish(out)
    if found != name:
        held = f"a publish of '{found}'" if found else f"files that are not a publish (no readable {ENTRY_FILE})"
        raise PublishError(f"--out {out} is not empty: it holds {held}; nothing was written: give an empty or new "
                           "folder")
    if not force:
        bundled = out.resolve().parent == registry.WEIGHTS_DIR.resolve()
        held = f"the checkpoint of '{name}' bundled with the zoo" if bundled else f"a previous publish of '{name}'"
        raise PublishError(f"{out} holds {held}; nothing was written: pass --force to replace it, or give another "
                           "--out")


def check_push_access(repo_id: str) -> None:
    """Fail before anything is written when the Hub cannot take the upload: offline, unreachable or not logged in."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    nothing = "nothing was written; publish without --push now and push later, or fix it and run again"
    if constants.HF_HUB_OFFLINE:
        raise PublishError(f"--push needs the Hub but offline mode is on (HF_HUB_OFFLINE=1): unset it; {nothing}")
    if not hub_reachable():
        raise PublishError(f"--push: the Hub ({constants.ENDPOINT}) cannot be reached; {nothing}")
    try:
        HfApi().whoami()
    except LocalTokenNotFoundError:
        raise PublishError(f"--push to {repo_id}: not logged in to the Hub: {AUTH_HINT}; {nothing}") from None
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status == 401:
            raise PublishError(f"--push to {repo_id}: the Hub refused the token (401 Unauthorized): {AUTH_HINT} with "
                               f"a token that can write; {nothing}") from None
        raise PublishError(f"--push to {repo_id}: the Hub answered {status} to the login check; {nothing}") from None
    except Exception as error:  # noqa: BLE001 - a network failure of any client library: the push cannot happen
        raise PublishError(f"--push: the Hub cannot be reached ({type(error).__name__}); {nothing}") from None


def write_json(path: Path, data: dict) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(staging, path)


def write_replacing(out: Path, fill) -> None:
    """`fill(folder)` writes the publish into a sibling temporary folder, which then takes `out`'s place: a
    failure leaves `out` as it was, and the old contents go only once the new ones are complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.publish-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        fill(staging)
    except BaseException:
        shutil.rmtree(staging)
        raise
    if not out.exists():
        staging.rename(out)
        return
    retired = out.with_name(f".{out.name}.replaced-{secrets.token_hex(4)}")
    out.rename(retired)
    try:
        staging.rename(out)
    except BaseException:
        retired.rename(out)
        raise
    shutil.rmtree(retired)


def publish(
    run_dir: Path,
    name: str,
    *,
    repo_id: str | None = None,
    out: Path | None = None,
    card_template: Path | None = None,
    push: bool = False,
    force: bool = False,
) -> Path:
    check_name(name)
    run_dir = Path(run_dir)
    run = validate_run(run_dir)
    model_type = read_model_type(run_dir / "model")
    repo_id = repo_id or f"{DEFAULT_ORG}/{name}"
    out = Path(out) if out is not None else run_dir / "publish" / name
    card_template = Path(card_template) if card_template else REPO_ROOT / "model_cards" / f"{name}.md"
    if not card_template.is_file():
        raise FileNotFoundError(f"{card_template} is missing: write the model card template for '{name}' first")
    check_out(out, name, force)
    if push:
        check_push_access(repo_id)

    run = {**run, "backbone_weights": backbone_weights_of(run_dir / "model")}
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

    def fill(folder: Path) -> None:
        for filename in CHECKPOINT_FILES:
            shutil.copy2(run_dir / "model" / filename, folder / filename)
        for pattern in ARTIFACT_PATTERNS:
            for path in sorted(run_dir.glob(pattern)):
                shutil.copy2(path, folder / path.name)
        plots = sorted(p.name for p in folder.glob("*.png"))
        (folder / "README.md").write_text(render_card(run, name, card_template, repo_id, plots).rstrip() + "\n")
        entry["sha256"] = file_sha256(folder / "model.safetensors")  # of the copy published, not the run's
        write_json(folder / ENTRY_FILE, entry)

    write_replacing(out, fill)
    if push:
        push_folder(out, repo_id, name, entry)
    return out


def push_folder(out: Path, repo_id: str, name: str, entry: dict) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        commit = api.upload_folder(folder_path=str(out), repo_id=repo_id, commit_message=f"Publish {name}")
    except Exception as error:  # noqa: BLE001 - the folder is complete; say how to finish by hand
        raise PublishError(f"{out} was written, but pushing it to {repo_id} failed ({type(error).__name__}: "
                           f"{(str(error).splitlines() or [''])[0]}): upload it with `hf upload {repo_id} {out}`, "
                           f"then set its commit as 'revision' in {out / ENTRY_FILE}") from None
    entry["revision"] = commit.oid
    write_json(out / ENTRY_FILE, entry)
    print(f"pushed {repo_id} at revision {commit.oid} (pinned in {out / ENTRY_FILE})")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m zoo.publish", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory written by a recipe")
    parser.add_argument("--name", required=True, help="registry name, e.g. drlt-otb")
    parser.add_argument("--repo-id", default=None, help=f"Hub repo (default {DEFAULT_ORG}/NAME)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder, empty or new (default RUN_DIR/publish/NAME); the checkpoint bundled "
                             "with the zoo is zoo/weights/NAME")
    parser.add_argument("--force", action="store_true",
                        help="replace --out when it holds a previous publish of NAME (e.g. the bundled checkpoint)")
    parser.add_argument("--card-template", type=Path, default=None, help="default model_cards/NAME.md")
    parser.add_argument("--push", action="store_true",
                        help=f"upload the folder to the Hub with huggingface_hub (log in first: {AUTH_HINT})")
    args = parser.parse_args(argv)
    try:
        out = publish(args.run_dir, args.name, repo_id=args.repo_id, out=args.out,
                      card_template=args.card_template, push=args.push, force=args.force)
    except (ValueError, FileNotFoundError) as error:  # PublishError and the run's own problems
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
