"""`zoo.load` trusts nothing it has not checked: weights against their recorded SHA-256, config.json against the
safetensors header (before any tensor is allocated), the device, the registry entries, the revision asked for.
Every refusal is one clear error naming the file and the fix. Each test is named after what it breaks."""

import json
import shutil
import socket
import time

import pytest
import torch
from huggingface_hub import constants

import zoo
import zoo.registry
from zoo.hub import MODEL_TYPES, CheckpointError, HubError, ZooModel, file_sha256, load_folder, model_class

from local_hub import LocalHub
from test_hub import tiny_published, tiny_run  # noqa: F401 - fixtures: the tiny test model, run and published
from tiny_model import TinyNet

WEIGHTS = zoo.registry.WEIGHTS_DIR  # the zoo's own registry, before any test points it elsewhere


@pytest.fixture
def hub_unreachable(monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def local_hub(monkeypatch):
    """A fake Hub on 127.0.0.1 that the in-process client talks to; `serve({repo_id: folder})` starts it."""
    hubs = []

    def serve(repos):
        hub = LocalHub(repos).__enter__()
        hubs.append(hub)
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        template = hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        return hub

    yield serve
    for hub in hubs:
        hub.__exit__(None, None, None)


def copy_folder(source, target, replace=None):
    """A copy of a checkpoint folder, with the files named in `replace` ({filename: bytes}) replaced."""
    shutil.copytree(source, target)
    for name, data in (replace or {}).items():
        (target / name).write_bytes(data)
    return target


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# -- the registry ---------------------------------------------------------------------------------------------------

def test_every_listed_model_type_imports():
    for model_type in MODEL_TYPES:
        cls = model_class(model_type)
        assert issubclass(cls, ZooModel) and cls.model_type == model_type


def test_every_bundled_zoo_json_records_sha256_of_its_weights():
    for path in sorted(WEIGHTS.glob("*/zoo.json")):
        entry = json.loads(path.read_text())
        assert entry.get("sha256") == file_sha256(path.parent / "model.safetensors"), path


@pytest.mark.parametrize("content", ["{broken", "[]", '{"name": "broken"}', '{"name": "elsewhere", '
                                     '"model_type": "tiny", "method": "m", "paper": "p", "paper_url": "", "benchmark": '
                                     '"b", "hub_repo": "o/b", "revision": null, "recipe": "r", "card": "c"}'],
                         ids=["invalid_json", "not_an_object", "fields_missing", "name_of_another_folder"])
@pytest.mark.filterwarnings("ignore:skipping model")  # asserted once, below; every later listing repeats it
def test_corrupt_zoo_json_is_skipped_in_listings_and_refused_only_by_name(tiny_published, hub_unreachable, content):
    broken = tiny_published.parent / "broken"
    broken.mkdir()
    (broken / "zoo.json").write_text(content)
    with pytest.warns(UserWarning, match="skipping model 'broken'.*zoo.json"):
        assert zoo.list_models() == ["tiny-demo"]
    assert isinstance(zoo.load("tiny-demo"), TinyNet)
    for request in (zoo.load, zoo.model_info):
        with pytest.raises(ValueError, match=r"'broken' cannot be loaded: .*broken/zoo.json.*restore"):
            request("broken")


# -- the weights' SHA-256 -------------------------------------------------------------------------------------------

def test_flipped_byte_in_bundled_weights_is_refused_naming_the_file(tiny_published, hub_unreachable):
    flip_last_byte(tiny_published / "model.safetensors")
    weights = str(tiny_published / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"{weights} has SHA-256 .* but .*zoo.json records"):
        zoo.load("tiny-demo")
    with pytest.raises(CheckpointError, match="SHA-256"):  # the published folder, loaded by its path
        zoo.load(tiny_published)


def test_flipped_byte_in_hub_download_is_refused_naming_the_file(tiny_published, local_hub, tmp_path):
    served = copy_folder(tiny_published, tmp_path / "served")
    flip_last_byte(served / "model.safetensors")
    local_hub({"rl-vision-zoo/tiny-demo": served})
    with pytest.raises(CheckpointError, match=r"cache.*model\.safetensors has SHA-256"):
        zoo.load("tiny-demo", cache_dir=tmp_path / "cache")


# -- config.json against the safetensors header ---------------------------------------------------------------------

def test_huge_config_fails_before_allocating(tiny_run, tmp_path, monkeypatch):
    run, _ = tiny_run
    config = json.dumps({"model_type": "tiny", "width": 10**6}).encode()
    folder = copy_folder(run / "model", tmp_path / "huge", {"config.json": config})
    built_on = []
    init = TinyNet.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built_on.append(self.layer.weight.device.type)

    monkeypatch.setattr(TinyNet, "__init__", recording_init)
    with pytest.raises(CheckpointError, match=r"huge/config.json does not match .*\[2, 1000000\] vs \[2, 3\]"):
        load_folder(folder)
    assert built_on == ["meta"]  # only the skeleton, which allocates nothing


@pytest.mark.parametrize("hidden_size", [1e6, 512], ids=["float_1e6", "int_512"])
def test_drlt_config_with_wrong_hidden_size_names_config(tmp_path, hidden_size):
    folder = copy_folder(WEIGHTS / "drlt-otb", tmp_path / "drlt")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": hidden_size}))
    with pytest.raises(CheckpointError, match=r"drlt/config.json does not (describe|match)"):
        load_folder(folder)


def test_config_of_another_model_type_is_refused_without_key_dump(tmp_path):
    folder = copy_folder(WEIGHTS / "drlt-otb", tmp_path / "mixed")
    shutil.copy(WEIGHTS / "acis-cvppp" / "config.json", folder / "config.json")
    with pytest.raises(CheckpointError, match="come from different checkpoints") as error:
        load_folder(folder)
    assert len(str(error.value)) < 800 and "mixed/model.safetensors" in str(error.value)


@pytest.mark.parametrize("data", [b"\xff" * 64, b"", None], ids=["garbage", "empty", "truncated"])
def test_corrupt_safetensors_header_names_the_file(tiny_run, tmp_path, data):
    run, _ = tiny_run
    if data is None:
        data = (run / "model" / "model.safetensors").read_bytes()[:-8]
    folder = copy_folder(run / "model", tmp_path / "corrupt", {"model.safetensors": data})
    with pytest.raises(CheckpointError, match="corrupt/model.safetensors is not a readable safetensors file"):
        load_folder(folder)


@pytest.mark.parametrize("config, message", [
    ("{not json", "is not valid JSON"),
    ("[]", "has no 'model_type'"),
    ('{"width": 3}', "has no 'model_type'"),
    ('{"model_type": "alpha"}', r"has model_type 'alpha', which this zoo does not know \(it knows acis, alba"),
], ids=["invalid_json", "not_an_object", "no_model_type", "unknown_model_type"])
def test_bad_config_json_names_the_file(tiny_run, tmp_path, config, message):
    run, _ = tiny_run
    folder = copy_folder(run / "model", tmp_path / "bad", {"config.json": config.encode()})
    with pytest.raises(CheckpointError, match=f"bad/config.json {message}"):
        load_folder(folder)


# -- the device -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device, message", [("cuda", "no CUDA GPU.*device='cpu'"), ("gpu", "not a torch device")])
def test_unavailable_device_is_refused_before_loading(tiny_published, hub_unreachable, monkeypatch, device, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for target in (tiny_published, "tiny-demo"):
        with pytest.raises(ValueError, match=message):
            zoo.load(target, device=device)


# -- revisions and repo ids -----------------------------------------------------------------------------------------

def test_requested_revision_unreachable_is_an_error_not_the_bundled_copy(tiny_published, hub_unreachable, capsys):
    with pytest.raises(HubError, match="revision 'v2'.*cannot be reached"):
        zoo.load("tiny-demo", revision="v2")
    assert "[zoo]" not in capsys.readouterr().err
    assert isinstance(zoo.load("tiny-demo"), TinyNet)  # the registered revision still falls back, with a notice
    assert "bundled" in capsys.readouterr().err


def test_requested_revision_missing_on_hub_is_an_error(tiny_published, local_hub, tmp_path):
    local_hub({"rl-vision-zoo/tiny-demo": tiny_published})
    with pytest.raises(HubError, match="has no revision 'no-such-tag'"):
        zoo.load("tiny-demo", revision="no-such-tag", cache_dir=tmp_path / "cache")
    assert isinstance(zoo.load("tiny-demo", cache_dir=tmp_path / "cache"), TinyNet)


def test_hub_repo_id_without_network_fails_fast(monkeypatch, tmp_path):
    # A black hole: the port accepts connections but never answers, as a network that drops packets.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{black_hole.getsockname()[1]}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr("zoo.hub.hub_reachable", lambda: False)  # what the TCP probe says without a network
        start = time.monotonic()
        with pytest.raises(HubError, match="some-org/some-model: the Hub .* cannot be reached and the local"):
            zoo.load("some-org/some-model", cache_dir=tmp_path / "cache")
        assert time.monotonic() - start < 5


def test_hub_repo_id_missing_says_so(local_hub, tmp_path):
    local_hub({})
    with pytest.raises(HubError, match="the Hub has no repo some-org/some-model.*HF_TOKEN"):
        zoo.load("some-org/some-model", cache_dir=tmp_path / "cache")
