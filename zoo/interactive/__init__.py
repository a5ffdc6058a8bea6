"""Interactive video object segmentation: the DAVIS scribble robot and davis-interactive scribble files.

`InteractiveScribblesRobot` / `RobotSession` / `choose_frame` (robot.py), `load_scribbles`, `save_scribbles`,
`scribbles_to_mask`, ... (scribbles.py); the image geometry they share is in geometry.py. The matching metrics are in
`zoo.metrics.interactive`.
"""

from zoo.interactive.robot import InteractiveScribblesRobot, RobotSession, choose_frame, scribble_outside_fraction
from zoo.interactive.scribbles import (
    annotated_frames,
    empty_scribbles,
    fuse_scribbles,
    load_scribbles,
    save_scribbles,
    scribbles_to_mask,
)

__all__ = [
    "InteractiveScribblesRobot", "RobotSession", "annotated_frames", "choose_frame", "empty_scribbles",
    "fuse_scribbles", "load_scribbles", "save_scribbles", "scribble_outside_fraction", "scribbles_to_mask",
]
