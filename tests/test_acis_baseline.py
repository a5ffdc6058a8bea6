"""The trivial baseline on the ACIS cards: every connected component of the model's own foreground is one leaf."""

from __future__ import annotations

import numpy as np
import torch

from zoo.acis.model import ACISSegmenter, ForegroundComponents

TINY = dict(height=32, width=32, latent_size=4, preproc_widths=[4, 4, 4, 4, 4], preproc_fc=8,
            encoder_widths=[4, 4, 4, 4, 8], bottleneck=16, rnn_size=16, feature_size=8, latent_channels=4,
            decoder_widths=[8, 8, 4, 4, 4], critic_widths=[4, 4, 4, 4, 8], critic_fc=[16, 16, 8], control_size=8)


def test_each_foreground_component_is_one_instance_at_the_input_size(monkeypatch):
    segmenter = ACISSegmenter(**TINY)
    foreground = torch.zeros(1, 9, 32, 32)
    foreground[0, -1, 2:10, 2:10] = 1.0  # two separate blobs in the network's foreground channel
    foreground[0, -1, 20:30, 18:30] = 1.0
    monkeypatch.setattr(segmenter.preproc, "channels", lambda image: foreground)
    labels, order = ForegroundComponents(segmenter).segment(np.zeros((64, 96, 3), dtype=np.uint8))
    assert labels.shape == (64, 96) and order == [1, 2]
    assert set(np.unique(labels)) == {0, 1, 2}
    assert (labels[6:18, 9:27] == labels[8, 12]).all() and labels[8, 12] > 0  # the first blob, scaled x3 / x2
    assert labels[50, 70] > 0 and labels[50, 70] != labels[8, 12]
    assert labels[35, 40] == 0
