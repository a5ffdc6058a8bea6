"""`load("ivosw-davis")`: IVOS-W's frame recommender (Yin et al., CVPR 2021): the trained agent (`Brain`, the policy
network of `zoo.ivosw.module.IVOSWAgentModule`) and the quality network of the Wild setting, in one checkpoint.

    recommender = zoo.load("ivosw-davis")
    frame = recommender.recommend(quality, counts)   # quality, counts: (N,) per frame -> the frame to annotate next
    q = recommender.quality(rgb, [prob_1, ..., prob_K])   # Wild setting: a frame's predicted J&F (Eq. 7)

``quality`` is the per-frame segmentation quality (Oracle: J&F against the ground truth; Wild: `quality` of each
frame) and ``counts`` how often each frame was annotated so far (the user's frame included). The arg-max of Q is
taken, never exploring. ``engine`` records the interactive VOS engine the agent was trained with (the default of
`python -m recipes.ivosw_davis --stage evaluate`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zoo.hub import ZooModel
from zoo.ivosw.env import state
from zoo.ivosw.networks import Brain
from zoo.ivosw.quality import QualityNetwork, frame_quality

# which state features the agent saw (the Table 6 ablation): the other one is zeroed, as in training
_KEPT_FEATURES = {"both": (1.0, 1.0), "quality": (1.0, 0.0), "counts": (0.0, 1.0)}


class IVOSWRecommender(ZooModel):
    model_type = "ivosw"

    def __init__(self, hidden: int = 128, head_hidden: int = 128, state_features: str = "both",
                 quality_backbone: str = "tf_efficientnet_lite0", quality_input_size: int = 256,
                 quality_min_side: float = 128.0, backbone_weights: str = "", engine: str = "flow"):
        super().__init__()
        if state_features not in _KEPT_FEATURES:
            raise ValueError(f"state_features must be one of {sorted(_KEPT_FEATURES)}, got {state_features!r}")
        self.agent = Brain(hidden, head_hidden)
        # The backbone is built without its ImageNet weights: the checkpoint's own weights replace them at load;
        # `backbone_weights` records where the trained network's initial weights came from.
        self.quality_network = QualityNetwork(quality_backbone, random_backbone=True, input_size=quality_input_size,
                                              min_side=quality_min_side)
        self.state_features, self.backbone_weights, self.engine = state_features, backbone_weights, engine
        self.eval()

    @torch.no_grad()
    def recommend(self, quality, counts) -> int | torch.Tensor:
        """The frame to annotate next: quality, counts (N,) -> int; (B, N) -> (B,)."""
        states = state(torch.as_tensor(quality, dtype=torch.float32), torch.as_tensor(counts, dtype=torch.float32))
        single = states.dim() == 2
        states = (states[None] if single else states) * torch.tensor(_KEPT_FEATURES[self.state_features])
        device = next(self.agent.parameters()).device
        frames = self.agent(states.to(device)).argmax(-1).cpu()
        return int(frames[0]) if single else frames

    def quality(self, image, probabilities: Sequence) -> float:
        """Predicted J&F of a frame (H×W×3 uint8 RGB) from each object's probability map (H×W), Eq. 7."""
        return frame_quality(self.quality_network, image, probabilities)
