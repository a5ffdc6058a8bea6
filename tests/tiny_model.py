"""A tiny zoo model for the hub tests, so they do not depend on any method's network."""

import torch

from zoo.hub import MODEL_TYPES, ZooModel


class TinyNet(ZooModel):
    model_type = "tiny"

    def __init__(self, width: int = 4):
        super().__init__()
        self.layer = torch.nn.Linear(width, 2)


def register() -> None:
    MODEL_TYPES["tiny"] = "tiny_model:TinyNet"
