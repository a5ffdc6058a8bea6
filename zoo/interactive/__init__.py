"""Interactive video object segmentation: the DAVIS scribble robot and davis-interactive scribble files."""
