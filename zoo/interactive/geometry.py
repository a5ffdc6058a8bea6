"""Image geometry behind the scribble robot: opening, medial axis, skeleton trees, longest paths, Bézier curves.

Each step reproduces what davisinteractive 1.0.4 (`robot/interactive_robot.py`) gets from scikit-image, networkx and
scikit-learn, none of which the zoo depends on:

* `open_like_rank_filters`: `skimage.filters.rank.minimum` then `rank.maximum` with the same `disk(radius)` footprint.
  Both anchor the footprint at index `shape // 2` and ignore pixels outside the image, which is exactly what
  `cv2.erode` / `cv2.dilate` do with their default anchor and border value. For a non-integer radius the disk has
  an even side and the result is the opening shifted by one pixel; that shift is part of the reference.
* `medial_axis`: `skimage.morphology.medial_axis` (one pass over the foreground pixels sorted by distance to the
  background, then "cornerness", then a tie-breaker; a pixel is removed unless that would change the 8-connectivity
  of its neighbourhood or it has fewer than three pixels in it). The tie-breaker is a fixed permutation
  `RandomState(seed).permutation`: seed 0 is the deterministic behaviour of scikit-image < 0.19, which the golden
  scribbles were made with (0.19+ draws it at random unless told a seed).
* `skeleton_trees`: the skeleton pixels as a graph whose edges join 8-neighbours (weight 1 or √2), split into
  connected components, cycles cut by dropping their heaviest edges, components with fewer than `min_nodes` pixels
  dropped. The reference removes the heaviest edge of whichever cycle networkx finds first until none is left; the
  result is a minimum spanning forest, which Kruskal's algorithm gives directly. Ties between equal-weight edges are
  broken by raster order of the edge (first endpoint, then second), so the forest is deterministic.
* `longest_path`: two breadth-first passes over the tree (hop counts, as `nx.single_source_shortest_path_length`):
  the farthest node from the first node, then the farthest from that one. Neighbours are visited in raster order and
  the first node reached at the largest depth wins, which is what networkx does when sklearn lists neighbours in index
  order; for other neighbour orders networkx may pick another end among equally long paths (the IVOS-W README warns
  that the scribbles depend on the networkx version for this reason).
* `bezier_curve`: davisinteractive's `utils.operations.bezier_curve`: the Bernstein form with
  `comb(n, i) t^(n-i) (1-t)^i`, so the curve starts at the *last* path point; paths longer than `nb_points` are
  returned as they are.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache

import cv2
import numpy as np
from scipy import ndimage
from scipy.special import comb

from zoo.metrics.davis import disk_footprint

# Bit k of a 3×3 neighbourhood code is the pixel at row k // 3 - 1, column k % 3 - 1 (bit 4 is the centre): the
# layout scikit-image's `_table_lookup` and `_skeletonize_loop` use.
_NEIGHBOUR_BITS = [(k // 3 - 1, k % 3 - 1, 1 << k) for k in range(9) if k != 4]


def open_like_rank_filters(mask: np.ndarray, radius: float) -> np.ndarray:
    """`rank.maximum(rank.minimum(mask, disk(radius)), disk(radius))` for a binary mask, as uint8 0/1."""
    footprint = disk_footprint(float(radius))
    eroded = cv2.erode(np.asarray(mask, dtype=np.uint8), footprint)
    return cv2.dilate(eroded, footprint)


def opening(mask: np.ndarray, radius: float) -> np.ndarray:
    """Morphological opening with `disk(radius)` (dilation by the reflected footprint): a subset of `mask`."""
    footprint = disk_footprint(float(radius))
    eroded = cv2.erode(np.asarray(mask, dtype=np.uint8), footprint)
    side = footprint.shape[0]
    anchor = side - 1 - side // 2
    return cv2.dilate(eroded, np.ascontiguousarray(footprint[::-1, ::-1]), anchor=(anchor, anchor))


def _pattern(code: int) -> np.ndarray:
    return np.array([[code >> (3 * row + col) & 1 for col in range(3)] for row in range(3)], dtype=bool)


@lru_cache(maxsize=1)
def _medial_axis_tables() -> tuple[bytes, np.ndarray]:
    eight = np.ones((3, 3), dtype=bool)
    keep = bytearray(512)
    cornerness = np.zeros(512, dtype=np.int64)
    for code in range(512):
        pattern = _pattern(code)
        cornerness[code] = 9 - pattern.sum()
        if not pattern[1, 1]:
            continue
        without_centre = pattern.copy()
        without_centre[1, 1] = False
        changes_connectivity = ndimage.label(pattern, eight)[1] != ndimage.label(without_centre, eight)[1]
        keep[code] = int(changes_connectivity or pattern.sum() < 3)
    return bytes(keep), cornerness


def _neighbourhood_codes(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image.astype(np.int64), 1)
    height, width = image.shape
    codes = image.astype(np.int64) << 4
    for d_row, d_col, bit in _NEIGHBOUR_BITS:
        codes += padded[1 + d_row : 1 + d_row + height, 1 + d_col : 1 + d_col + width] * bit
    return codes


def medial_axis(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """Boolean medial axis of a binary image, as scikit-image's `medial_axis` with tie-breaker `RandomState(seed)`."""
    foreground = np.asarray(image, dtype=bool)
    if foreground.ndim != 2:
        raise ValueError(f"medial_axis needs a 2-D mask, got shape {foreground.shape}")
    keep_table, cornerness_table = _medial_axis_tables()
    distance = ndimage.distance_transform_edt(foreground)[foreground]
    corner_score = cornerness_table[_neighbourhood_codes(foreground)][foreground]
    tiebreaker = np.random.RandomState(seed).permutation(int(foreground.sum()))
    order = np.lexsort((tiebreaker, corner_score, distance))

    # One pass in that order over a zero-padded copy (outside the image counts as background, as in the reference);
    # a pixel's fate depends on the neighbours already removed, so this loop cannot be vectorised.
    height, width = foreground.shape
    stride = width + 2
    result = bytearray(np.pad(foreground, 1).astype(np.uint8).tobytes())
    rows, cols = np.nonzero(foreground)
    flat = ((rows + 1) * stride + cols + 1)[order].tolist()
    offsets = [(d_row * stride + d_col, bit) for d_row, d_col, bit in _NEIGHBOUR_BITS]
    for position in flat:
        code = 16
        for offset, bit in offsets:
            if result[position + offset]:
                code += bit
        result[position] = keep_table[code]
    padded = np.frombuffer(bytes(result), dtype=np.uint8).reshape(height + 2, width + 2)
    return padded[1:-1, 1:-1].astype(bool)


def skeleton_points(skeleton: np.ndarray) -> np.ndarray:
    """(x, y) pixel coordinates of the skeleton in raster order (row by row), as int64 of shape (N, 2)."""
    rows, cols = np.nonzero(np.asarray(skeleton, dtype=bool))
    return np.stack([cols, rows], axis=1).astype(np.int64)


def _skeleton_edges(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (i < j, node indices in raster order) between 8-neighbouring skeleton pixels, with their lengths."""
    skeleton = np.asarray(skeleton, dtype=bool)
    index = np.full(skeleton.shape, -1, dtype=np.int64)
    index[skeleton] = np.arange(int(skeleton.sum()))
    padded = np.pad(index, 1, constant_values=-1)
    height, width = skeleton.shape
    sources, targets, lengths = [], [], []
    # The four "forward" neighbours: each undirected edge is listed once, from its earlier pixel in raster order.
    for d_row, d_col in ((0, 1), (1, -1), (1, 0), (1, 1)):
        neighbour = padded[1 + d_row : 1 + d_row + height, 1 + d_col : 1 + d_col + width]
        both = skeleton & (neighbour >= 0)
        sources.append(index[both])
        targets.append(neighbour[both])
        lengths.append(np.full(int(both.sum()), np.hypot(d_row, d_col)))
    return np.concatenate(sources), np.concatenate(targets), np.concatenate(lengths)


def _find(parent: list[int], node: int) -> int:
    while parent[node] != node:
        parent[node] = parent[parent[node]]
        node = parent[node]
    return node


def skeleton_trees(skeleton: np.ndarray, min_nodes: int = 4) -> list[dict[int, list[int]]]:
    """Minimum spanning trees of the skeleton's connected components, each as an adjacency dict {node: [nodes]}.

    Nodes index `skeleton_points(skeleton)`; neighbour lists and the list of trees are in raster order (a tree's
    position is that of its first pixel); trees with fewer than `min_nodes` nodes are dropped.
    """
    sources, targets, lengths = _skeleton_edges(skeleton)
    count = int(np.count_nonzero(skeleton))
    parent = list(range(count))
    adjacency: list[list[int]] = [[] for _ in range(count)]
    for edge in np.lexsort((targets, sources, lengths)).tolist():
        source, target = int(sources[edge]), int(targets[edge])
        root_source, root_target = _find(parent, source), _find(parent, target)
        if root_source == root_target:
            continue  # this edge would close a cycle, and every edge already in it is no heavier
        parent[max(root_source, root_target)] = min(root_source, root_target)
        adjacency[source].append(target)
        adjacency[target].append(source)
    members: dict[int, list[int]] = {}
    for node in range(count):
        members.setdefault(_find(parent, node), []).append(node)
    return [
        {node: sorted(adjacency[node]) for node in nodes}
        for _, nodes in sorted(members.items())
        if len(nodes) >= min_nodes
    ]


def _breadth_first(tree: dict[int, list[int]], source: int) -> tuple[list[int], dict[int, int | None]]:
    order, parents = [source], {source: None}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        for neighbour in tree[node]:
            if neighbour not in parents:
                parents[neighbour] = node
                order.append(neighbour)
                queue.append(neighbour)
    return order, parents


def _first_deepest(order: list[int], parents: dict[int, int | None]) -> int:
    depth = {}
    for node in order:
        parent = parents[node]
        depth[node] = 0 if parent is None else depth[parent] + 1
    deepest = max(depth.values())
    return next(node for node in order if depth[node] == deepest)


def longest_path(tree: dict[int, list[int]]) -> list[int]:
    """Nodes of a longest path (in hops) of a tree, found by two breadth-first passes; see the module docstring."""
    if not tree:
        return []
    start = min(tree)
    order, parents = _breadth_first(tree, start)
    end = _first_deepest(order, parents)
    order, parents = _breadth_first(tree, end)
    node: int | None = _first_deepest(order, parents)
    path = []
    while node is not None:
        path.append(node)
        node = parents[node]
    return path[::-1]


def bezier_curve(points: np.ndarray, nb_points: int = 1000) -> np.ndarray:
    """`nb_points` samples of the Bézier curve with control points `points` (N, 2); see the module docstring."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"bezier_curve needs points of shape (N, 2), got {points.shape}")
    nb_points = min(int(nb_points), 1000)
    if len(points) > nb_points:
        return points
    t = np.linspace(0.0, 1.0, nb_points).reshape(1, -1)
    i = np.arange(len(points)).reshape(-1, 1)
    degree = len(points) - 1
    bernstein = comb(degree, i) * t ** (degree - i) * (1 - t) ** i
    return bernstein.T @ points
