"""The recipe stops after a cVAE whose posterior collapsed (its decoder ignores the latent and emits empty masks)
instead of training the actor on it, and lets a cVAE that reconstructs its instances through."""

from __future__ import annotations

import pytest
import torch

from datamodules.cvppp import CVPPPDataModule
from datamodules.synthetic_cvppp import write_synthetic_cvppp
from recipes._acis_common import check_reconstruction
from zoo.acis.module import CVAEModule
from zoo.acis.networks import ACISConfig

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = ACISConfig(
    height=32, width=32, latent_size=4, preproc_widths=[4, 4, 4, 4, 4], preproc_fc=8,
    encoder_widths=[4, 4, 4, 4, 8], bottleneck=16, rnn_size=16, feature_size=8, latent_channels=4,
    decoder_widths=[8, 8, 4, 4, 4], critic_widths=[4, 4, 4, 4, 8], critic_fc=[16, 16, 8], control_size=8,
)


class CopyingDecoder(torch.nn.Module):
    """A stand-in decoder that 'reconstructs' perfectly: it returns the target the test hands the encoder."""

    def __init__(self):
        super().__init__()
        self.target = None

    def forward(self, action, pyramid):
        return self.target * 20 - 10


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    root = write_synthetic_cvppp(tmp_path_factory.mktemp("cvppp"), num_images=8, seed=0)
    return CVPPPDataModule(root, batch_size=4, augment=False, geometry="whole", crop_size=32)


def test_a_collapsed_cvae_stops_the_recipe_and_names_the_fix(datamodule, tmp_path):
    cvae = CVAEModule(TINY.to_dict())
    with torch.no_grad():
        cvae.decoder.out.bias.fill_(-20.0)  # every decoded mask empty, whatever the latent: a collapsed decoder
    with pytest.raises(SystemExit, match=r"posterior collapsed.*--seed 4 --stage cvae --restart"):
        check_reconstruction(cvae, datamodule, tmp_path, seed=3, minimum=0.1)


def test_a_cvae_that_reconstructs_passes(datamodule, tmp_path, monkeypatch):
    cvae = CVAEModule(TINY.to_dict())
    decoder = CopyingDecoder()
    encode = cvae.encoder.forward

    def remembering(image, mask, aux):
        decoder.target = mask
        return encode(image, mask, aux)

    monkeypatch.setattr(cvae.encoder, "forward", remembering)
    cvae.decoder = decoder
    assert check_reconstruction(cvae, datamodule, tmp_path, seed=0, minimum=0.1) == pytest.approx(1.0)
