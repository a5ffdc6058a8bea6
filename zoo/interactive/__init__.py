"""Interactive video object segmentation: the DAVIS scribble robot and davis-interactive scribble files.

`InteractiveScribblesRobot` / `RobotSession` / `choose_frame` (robot.py), `load_scribbles`, `save_scribbles`,
`scribbles_to_mask`, ... (scribbles.py); interactive VOS engines behind one interface (`InteractiveEngine`,
the weight-free `FlowPropagationEngine`, engines.py; the learned `MatchingEngine`, matching_engine.py); the image geometry they share is in geometry.py. The matching metrics are in
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
    "EngineOutput", "FlowPropagationEngine", "InteractiveEngine", "InteractiveScribblesRobot", "MatchingEngine", "RobotSession", "annotated_frames", "choose_frame", "empty_scribbles",
    "fuse_scribbles", "load_scribbles", "save_scribbles", "scribble_outside_fraction", "scribbles_to_mask",
]

_ENGINES = ("EngineOutput", "FlowPropagationEngine", "InteractiveEngine")


def __getattr__(name: str):
    # the engines need torch (optical flow); importing the robot and the scribble I/O must not
    if name in _ENGINES:
        from zoo.interactive import engines

        return getattr(engines, name)
    if name == "MatchingEngine":
        from zoo.interactive import matching_engine

        return matching_engine.MatchingEngine
    raise AttributeError(f"module 'zoo.interactive' has no attribute {name!r}")
