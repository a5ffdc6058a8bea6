import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import zoo
import zoo.registry
from zoo.hub import load_folder
from zoo.publish import publish

sys.path.insert(0, str(Path(__file__).parent))
from local_hub import LocalHub  # noqa: E402
from tiny_model import TinyNet, register  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
CARD_TEMPLATE = """# {{ name }}

Trained on {{ trained_on }}; reproduce with `{{ command }}`.

{{ results_table }}

Deviations:
{{ notes }}
"""


@pytest.fixture
def tiny_run(tmp_path):
    register()
    torch.manual_seed(0)
    run = tmp_path / "run"
    TinyNet(width=3).save_pretrained(run / "model")
    results = {
        "model": "tiny-demo", "method": "tiny", "paper": "A tiny paper", "paper_url": "https://example.org",
        "benchmark": "Toy", "command": "python -m recipes.tiny --seed 0", "hardware": "2-core CPU",
        "trained_on": "nothing at all",
        "results": [{"task_type": "visual-object-tracking", "task_name": "Toy tracking", "dataset_name": "Toy",
                     "dataset_type": "toy", "dataset_split": "test", "data": "3 synthetic toy sequences",
                     "metrics": [{"type": "success_auc", "name": "Success AUC", "value": 0.4321}]}],
        "notes": ["tiny deviation"],
    }
    (run / "results.json").write_text(json.dumps(results))
    (run / "per_sequence.csv").write_text("sequence,auc\nA,0.4321\n")
    template = tmp_path / "tiny-demo.md"
    template.write_text(CARD_TEMPLATE)
    return run, template


@pytest.fixture
def tiny_published(tiny_run, tmp_path, monkeypatch):
    run, template = tiny_run
    weights = tmp_path / "weights"
    monkeypatch.setattr(zoo.registry, "WEIGHTS_DIR", weights)
    out = publish(run, "tiny-demo", out=weights / "tiny-demo", card_template=template)
    return out


def card_metadata(card_path: Path) -> dict:
    text = card_path.read_text()
    return yaml.safe_load(text.split("---")[1])


def test_publish_writes_hub_ready_folder_with_measured_card(tiny_published):
    out = tiny_published
    assert {"config.json", "model.safetensors", "README.md", "zoo.json", "per_sequence.csv", "results.json"} <= {
        p.name for p in out.iterdir()
    }
    meta = card_metadata(out / "README.md")
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"][0]["value"] == 0.4321
    assert result["dataset"]["args"] == {"data": "3 synthetic toy sequences"}
    body = (out / "README.md").read_text().split("---", 2)[2]
    assert "python -m recipes.tiny --seed 0" in body and "tiny deviation" in body
    # every number in the card's text is one the run measured (or the reproduce command's seed)
    numbers = set(re.findall(r"\d+\.\d+", body))
    assert numbers <= {"0.4321"}


def test_registry_lists_and_describes(tiny_published):
    assert zoo.list_models() == ["tiny-demo"]
    assert zoo.list_models("tiny-*") == ["tiny-demo"] and zoo.list_models("acis-*") == []
    info = zoo.model_info("tiny-demo")
    assert info["hub_repo"] == "rl-vision-zoo/tiny-demo" and info["recipe"] == "python -m recipes.tiny --seed 0"
    assert info["results"][0]["data"] == "3 synthetic toy sequences"
    with pytest.raises(KeyError, match="did you mean 'tiny-demo'"):
        zoo.model_info("tiny-dem")
    with pytest.raises(KeyError, match="tiny-demo"):
        zoo.load("tiny-dmeo")


def test_publish_refuses_a_run_without_results(tiny_run, tmp_path):
    run, template = tiny_run
    (run / "results.json").write_text(json.dumps({"method": "tiny", "paper": "p", "benchmark": "b",
                                                  "command": "c", "results": []}))
    with pytest.raises(ValueError, match="no measured results"):
        publish(run, "tiny-demo", out=tmp_path / "out", card_template=template)


def test_load_is_strict_and_names_both_models(tiny_run, tmp_path):
    run, _ = tiny_run
    model = load_folder(run / "model")
    assert isinstance(model, TinyNet) and not model.training
    with pytest.raises(ValueError, match="'tiny' checkpoint, but a 'drlt' model"):
        load_folder(run / "model", expected_type="drlt")
    # a checkpoint whose tensors disagree with the architecture must not load silently
    from safetensors.torch import save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((run / "model" / "config.json").read_text())
    save_file({"layer.weight": torch.zeros(2, 3)}, broken / "model.safetensors")  # bias missing
    with pytest.raises(ValueError, match=r"needs 1 that are not stored \(layer\.bias\)"):
        load_folder(broken)


def test_unreachable_hub_falls_back_to_bundled_copy(tiny_published, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    model = zoo.load("tiny-demo")
    assert isinstance(model, TinyNet)
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("[zoo]")]) == 1 and "bundled" in err[-1]


LOAD_SCRIPT = """
import sys, hashlib
sys.path.insert(0, {tests!r})
from tiny_model import register
register()
from zoo import load
model = load("tiny-demo")
print("WEIGHT", hashlib.sha256(model.layer.weight.detach().numpy().tobytes()).hexdigest(), model.training)
"""


def run_load(env: dict) -> subprocess.CompletedProcess:
    script = LOAD_SCRIPT.format(tests=str(Path(__file__).parent))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)


def test_download_through_real_client_then_offline_from_cache(tiny_published, tmp_path):
    import hashlib

    expected = hashlib.sha256(TinyNet.from_pretrained(str(tiny_published)).layer.weight.detach().numpy().tobytes())
    hf_home = tmp_path / "hf_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(hf_home), ZOO_WEIGHTS_DIR=str(tiny_published.parent), PYTHONPATH=str(REPO_ROOT))

    with LocalHub({"rl-vision-zoo/tiny-demo": tiny_published}) as hub:
        online = run_load({**env, "HF_ENDPOINT": hub.endpoint})
        assert online.returncode == 0, online.stderr
        assert f"WEIGHT {expected.hexdigest()} False" in online.stdout
        assert "[zoo]" not in online.stderr  # came from the Hub, not the fallback
        assert ("GET", "/rl-vision-zoo/tiny-demo/resolve/main/model.safetensors") in hub.requests
    snapshots = list((hf_home / "hub" / "models--rl-vision-zoo--tiny-demo" / "snapshots").glob("*/model.safetensors"))
    assert len(snapshots) == 1

    # server gone and the bundled copy removed: only the cache can answer now
    (tiny_published / "model.safetensors").unlink()
    offline = run_load({**env, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr
    assert f"WEIGHT {expected.hexdigest()} False" in offline.stdout


def test_every_registered_model_loads_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    names = zoo.list_models()
    for name in names:
        model = zoo.load(name)
        assert not model.training
        assert model.model_type == zoo.model_info(name)["model_type"]


def test_readme_zoo_table_is_generated_from_the_registry():
    readme = (REPO_ROOT / "README.md").read_text()
    assert zoo.registry.readme_with_table(readme) == readme, "run: python -m zoo.registry --update-readme"


def test_generated_tables_keep_a_pipe_in_a_metric_name_inside_its_cell():
    from zoo.publish import results_table

    def cells(row):
        return re.split(r"(?<!\\)\|", row.strip())[1:-1]

    results = [{"data": "synthetic", "dataset_split": "val", "metrics": [{"type": "abs_dic", "name": "|DiC|", "value": 2.25}]}]
    table = results_table(results).splitlines()
    assert [len(cells(row)) for row in table] == [4, 4, 4]
    assert cells(table[2])[2].strip() == "\\|DiC\\|"
    for row in zoo.registry.zoo_table().splitlines():
        assert len(cells(row)) == 9, row
