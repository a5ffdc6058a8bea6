"""`python -m zoo.publish` loses nothing: no bundled checkpoint, no foreign folder, no half-written output, and a
`--push` that cannot happen fails in one line before anything is written. Each test is named after what it breaks."""

import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

import zoo.publish
import zoo.registry
from zoo.publish import PublishError, main, publish

from test_hub import tiny_run  # noqa: F401 - fixture: a run directory of the tiny test model + its card template


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def bundled(tiny_run, tmp_path, monkeypatch):
    """A registry folder holding a published 'tiny-demo', as zoo/weights holds the zoo's checkpoints."""
    run, template = tiny_run
    weights = tmp_path / "weights"
    monkeypatch.setattr(zoo.registry, "WEIGHTS_DIR", weights)
    publish(run, "tiny-demo", out=weights / "tiny-demo", card_template=template)
    return weights / "tiny-demo"


@pytest.mark.parametrize("name", ["..", "../zoo", "/tmp/x", "Tiny-Demo", "-tiny", "tiny demo", "tiny_demo", ""])
def test_name_outside_registry_pattern_is_refused_before_anything_is_written(tiny_run, tmp_path, name):
    run, template = tiny_run
    before = snapshot(tmp_path)
    with pytest.raises(PublishError, match="not a registry name"):
        publish(run, name, out=tmp_path / "out", card_template=template)
    assert snapshot(tmp_path) == before


def test_default_output_goes_under_run_directory_not_into_the_package(tiny_run, bundled, capsys):
    run, template = tiny_run
    before = snapshot(bundled.parent)
    out = main([str(run), "--name", "tiny-demo", "--card-template", str(template)])
    assert out == run / "publish" / "tiny-demo" and (out / "model.safetensors").is_file()
    assert snapshot(bundled.parent) == before
    assert f"wrote {out}" in capsys.readouterr().out


def test_bundled_checkpoint_is_replaced_only_with_force(tiny_run, bundled):
    run, template = tiny_run
    before = snapshot(bundled)
    with pytest.raises(PublishError, match="bundled with the zoo.*--force"):
        publish(run, "tiny-demo", out=bundled, card_template=template)
    assert snapshot(bundled) == before

    results = json.loads((run / "results.json").read_text())
    results["command"] = "python -m recipes.tiny --seed 1"
    (run / "results.json").write_text(json.dumps(results))
    publish(run, "tiny-demo", out=bundled, card_template=template, force=True)
    assert json.loads((bundled / "zoo.json").read_text())["recipe"] == "python -m recipes.tiny --seed 1"
    assert sorted(p.name for p in bundled.parent.iterdir()) == ["tiny-demo"]  # no temporary folder left


@pytest.mark.parametrize("force", [False, True])
def test_out_holding_other_files_is_refused_even_with_force(tiny_run, tmp_path, force):
    run, template = tiny_run
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("not a publish")
    with pytest.raises(PublishError, match="not empty.*not a publish"):
        publish(run, "tiny-demo", out=out, card_template=template, force=force)
    assert snapshot(out) == {"notes.txt": b"not a publish"}


def test_out_holding_another_models_publish_is_refused_even_with_force(tiny_run, tmp_path):
    run, template = tiny_run
    out = publish(run, "other-model", out=tmp_path / "other", card_template=template)
    before = snapshot(out)
    with pytest.raises(PublishError, match="a publish of 'other-model'"):
        publish(run, "tiny-demo", out=out, card_template=template, force=True)
    assert snapshot(out) == before


def test_out_that_is_a_file_is_refused(tiny_run, tmp_path):
    run, template = tiny_run
    (tmp_path / "out").write_text("keep me")
    with pytest.raises(PublishError, match="is a file"):
        publish(run, "tiny-demo", out=tmp_path / "out", card_template=template)
    assert (tmp_path / "out").read_text() == "keep me"


def test_empty_existing_out_is_written(tiny_run, tmp_path):
    run, template = tiny_run
    (tmp_path / "out").mkdir()
    publish(run, "tiny-demo", out=tmp_path / "out", card_template=template)
    assert (tmp_path / "out" / "zoo.json").is_file()


def test_failed_replacement_leaves_previous_publish_intact(tiny_run, bundled, monkeypatch):
    run, template = tiny_run
    before = snapshot(bundled)

    def card_fails(*args, **kwargs):
        raise RuntimeError("disk full while rendering the card")

    monkeypatch.setattr(zoo.publish, "render_card", card_fails)
    with pytest.raises(RuntimeError, match="disk full"):
        publish(run, "tiny-demo", out=bundled, card_template=template, force=True)
    assert snapshot(bundled) == before
    assert sorted(p.name for p in bundled.parent.iterdir()) == ["tiny-demo"]


def test_zoo_json_records_sha256_of_published_weights(bundled):
    entry = json.loads((bundled / "zoo.json").read_text())
    assert entry["sha256"] == hashlib.sha256((bundled / "model.safetensors").read_bytes()).hexdigest()
    assert zoo.registry.get_entry("tiny-demo").sha256 == entry["sha256"]


def http_error(status: int) -> HfHubHTTPError:
    import httpx2

    request = httpx2.Request("GET", "https://huggingface.co/api/whoami-v2")
    return HfHubHTTPError(f"{status} Client Error", response=httpx2.Response(status, request=request))


def whoami_raising(error):
    def whoami(self, *args, **kwargs):
        raise error

    return whoami


PUSH_FAILURES = {
    # case: (offline mode, TCP probe answers, whoami, what the one line must say)
    "offline_mode": (True, True, None, "HF_HUB_OFFLINE"),
    "no_network": (False, False, None, "cannot be reached"),
    "not_logged_in": (False, True, whoami_raising(LocalTokenNotFoundError("no token")), "HF_TOKEN"),
    "token_rejected_401": (False, True, whoami_raising(http_error(401)), "401.*HF_TOKEN.*hf auth login"),
    "connection_drops": (False, True, whoami_raising(ConnectionResetError("reset by peer")), "cannot be reached"),
}


@pytest.mark.parametrize("case", sorted(PUSH_FAILURES))
def test_push_that_cannot_happen_fails_in_one_line_before_writing(tiny_run, tmp_path, monkeypatch, capsys, case):
    offline, reachable, whoami, expected = PUSH_FAILURES[case]
    run, template = tiny_run
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(zoo.publish, "hub_reachable", lambda: reachable)
    monkeypatch.setattr(HfApi, "whoami", whoami or whoami_raising(AssertionError("whoami must not be called")))
    monkeypatch.setattr(HfApi, "upload_folder", whoami_raising(AssertionError("nothing may be uploaded")))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main([str(run), "--name", "tiny-demo", "--card-template", str(template), "--out", str(out), "--push"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "nothing was written" in err
    assert re.search(expected, err), err
    assert not out.exists()


def test_push_uploads_complete_folder_and_pins_revision(tiny_run, tmp_path, monkeypatch):
    run, template = tiny_run
    uploaded = {}

    def upload_folder(self, *, folder_path, repo_id, commit_message):
        uploaded.update(snapshot(Path(folder_path)))
        return SimpleNamespace(oid="f" * 40)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(zoo.publish, "hub_reachable", lambda: True)
    monkeypatch.setattr(HfApi, "whoami", lambda self, *a, **k: {"name": "maintainer"})
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: None)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = publish(run, "tiny-demo", out=tmp_path / "out", card_template=template, push=True)
    assert json.loads((out / "zoo.json").read_text())["revision"] == "f" * 40
    assert {"model.safetensors", "config.json", "README.md", "zoo.json"} <= set(uploaded)


def test_push_failing_after_writing_says_how_to_finish_in_one_line(tiny_run, tmp_path, monkeypatch, capsys):
    run, template = tiny_run
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(zoo.publish, "hub_reachable", lambda: True)
    monkeypatch.setattr(HfApi, "whoami", lambda self, *a, **k: {"name": "maintainer"})
    monkeypatch.setattr(HfApi, "create_repo", whoami_raising(http_error(403)))
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        main([str(run), "--name", "tiny-demo", "--card-template", str(template), "--out", str(out), "--push"])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "hf upload rl-vision-zoo/tiny-demo" in err, err
    assert (out / "model.safetensors").is_file()
