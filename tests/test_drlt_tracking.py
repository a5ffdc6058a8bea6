"""What makes DRLT follow the target it is given: the environment's episodes (random target, start frame, direction,
mirror; s_1 = the box on the episode's first frame; frames without a box never scored; exact resume) and the
observation's use of s_1 (the location input, and in "template" mode the first box's appearance)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from zoo.drlt.env import TrackingEnvironment, TrainingTrack
from zoo.drlt.networks import RecurrentTracker, template_descriptor

pytestmark = pytest.mark.usefixtures("torch_one_thread")

NAN = float("nan")
SIZE = 3  # feature maps of the toy tracks are 3 channels x 3 x 3


# -- toy tracks whose feature maps say which track, which frame and which way round they are --------------------------
def _track(track_id: int, frames: int, missing=(), weight: float = 1.0) -> TrainingTrack:
    """Channel 0: 100·track_id + frame index; channel 1: the column index (0, 1, 2: reversed by a mirror); channel 2:
    the row index (untouched by a mirror). Boxes differ from frame to frame and are not symmetric about x = 0.5."""
    index = torch.arange(frames, dtype=torch.float32)
    features = torch.zeros(frames, 3, SIZE, SIZE)
    features[:, 0] = (100 * track_id + index)[:, None, None]
    features[:, 1] = torch.arange(SIZE, dtype=torch.float32)[None, None, :]
    features[:, 2] = torch.arange(SIZE, dtype=torch.float32)[None, :, None]
    locations = torch.stack([0.2 + 0.01 * index + 0.1 * track_id, 0.3 + 0.02 * index, 0.1 + 0.005 * index,
                             torch.full_like(index, 0.25)], dim=1)
    locations[list(missing)] = NAN
    return TrainingTrack(f"track{track_id}", features, locations, weight)


MIRROR = (torch.tensor([-1.0, 1, 1, 1]), torch.tensor([1.0, 0, 0, 0]))


def _decode(chunk, b: int) -> dict:
    """What slot b of a chunk shows, read from the toy feature maps: the track, its frames in order, mirrored or not."""
    count = int((chunk.features[b].flatten(1).abs().sum(1) > 0).sum())  # padding is all zeros
    codes = chunk.features[b, :count, 0, 0, 0].round().long()
    columns = chunk.features[b, 0, 1, 0]
    flipped = bool(torch.equal(columns, torch.arange(SIZE - 1, -1, -1, dtype=columns.dtype)))
    assert flipped or torch.equal(columns, torch.arange(SIZE, dtype=columns.dtype))
    return {"track": int(codes[0]) // 100, "frames": (codes % 100).tolist(), "flipped": flipped}


def _expected_boxes(track: TrainingTrack, frames: list[int], flipped: bool) -> torch.Tensor:
    boxes = track.locations[frames]
    return boxes * MIRROR[0] + MIRROR[1] if flipped else boxes


def _episodes(env: TrackingEnvironment, tracks, chunks: int, steps: int) -> list[dict]:
    """Draws `chunks` chunks of an environment whose episodes fit in one chunk, checks what every chunk says about
    its episode against the track it came from, and returns the episodes."""
    episodes = []
    for _ in range(chunks):
        chunk = env.next_chunk(steps)
        assert chunk.restart.all()  # one episode per chunk: each starts afresh
        for b in range(len(chunk.restart)):
            episode = _decode(chunk, b)
            track, frames = tracks[episode["track"]], episode["frames"]
            valid = chunk.valid[b, :len(frames)]
            assert not chunk.valid[b, len(frames):].any()  # past the episode's end: nothing to score
            boxes = _expected_boxes(track, frames, episode["flipped"])
            # a frame is scored exactly when the target has a box there; targets are NaN-free
            assert valid.tolist() == torch.isfinite(boxes).all(-1).tolist()
            assert torch.isfinite(chunk.targets).all()
            torch.testing.assert_close(chunk.targets[b, :len(frames)][valid], boxes[valid])
            # the maps are the track's, mirrored along the width when the boxes are
            maps = track.features[frames]
            torch.testing.assert_close(chunk.features[b, :len(frames)], maps.flip(-1) if episode["flipped"] else maps)
            # s_1 is the box on the episode's first frame: given to the network there, zero after it
            assert valid[0]
            torch.testing.assert_close(chunk.location_inputs[b, 0], chunk.targets[b, 0])
            torch.testing.assert_close(chunk.first_boxes[b], chunk.targets[b, 0])
            torch.testing.assert_close(chunk.first_features[b], chunk.features[b, 0])
            assert chunk.location_inputs[b, 1:].abs().sum() == 0
            steps_taken = {later - earlier for earlier, later in zip(frames, frames[1:])}
            assert len(frames) >= 2 and len(steps_taken) == 1 and steps_taken <= {1, -1}, frames
            episode["direction"] = steps_taken.pop()
            episodes.append(episode)
    return episodes


# -- environment --------------------------------------------------------------------------------------------------------
def test_episodes_start_at_random_frames_of_random_targets_with_s1_the_box_there():
    tracks = [_track(0, 20), _track(1, 20)]
    env = TrackingEnvironment(tracks, slots=4, episode_length=5, seed=0)  # random start, reverse 0.5, mirror 0.5
    episodes = _episodes(env, tracks, chunks=25, steps=5)
    starts = {episode["frames"][0] for episode in episodes}
    assert len(starts) >= 10, sorted(starts)
    assert {episode["track"] for episode in episodes} == {0, 1}
    assert {episode["direction"] for episode in episodes} == {1, -1}
    assert {episode["flipped"] for episode in episodes} == {False, True}
    assert all(len(episode["frames"]) <= 5 for episode in episodes)


def test_reverse_episodes_hand_out_frames_in_decreasing_order():
    tracks = [_track(0, 12)]
    backwards = _episodes(TrackingEnvironment(tracks, slots=3, episode_length=4, reverse_prob=1.0, flip_prob=0.0,
                                              seed=1), tracks, chunks=20, steps=4)
    assert all(not episode["flipped"] for episode in backwards)
    # every episode goes back in time, except one drawn on the first frame (nothing before it: it turns round)
    assert all(episode["direction"] == -1 for episode in backwards if episode["frames"][0] > 0)
    assert sum(episode["frames"][0] > 0 for episode in backwards) >= 40
    forwards = _episodes(TrackingEnvironment(tracks, slots=3, episode_length=4, reverse_prob=0.0, flip_prob=0.0,
                                             seed=1), tracks, chunks=20, steps=4)
    assert all(episode["direction"] == 1 for episode in forwards if episode["frames"][0] < 11)


def test_mirrored_episodes_flip_the_map_along_the_width_and_x_to_one_minus_x():
    tracks = [_track(0, 10)]
    mirrored = _episodes(TrackingEnvironment(tracks, slots=2, episode_length=3, flip_prob=1.0, seed=2), tracks,
                         chunks=10, steps=3)
    assert all(episode["flipped"] for episode in mirrored)  # maps and boxes checked in _episodes
    plain = _episodes(TrackingEnvironment(tracks, slots=2, episode_length=3, flip_prob=0.0, seed=2), tracks,
                      chunks=10, steps=3)
    assert not any(episode["flipped"] for episode in plain)
    # by hand: frame f of the toy track has x = 0.2 + 0.01 f, so the mirrored target's x is 0.8 - 0.01 f
    env = TrackingEnvironment(tracks, slots=1, episode_length=3, random_start=False, reverse_prob=0.0, flip_prob=1.0)
    chunk = env.next_chunk(3)
    torch.testing.assert_close(chunk.targets[0, :, 0], torch.tensor([0.8, 0.79, 0.78]))
    torch.testing.assert_close(chunk.targets[0, :, 1:], tracks[0].locations[:3, 1:])
    torch.testing.assert_close(chunk.features[0, :, 1, 0], torch.tensor([[2.0, 1, 0]] * 3))  # columns reversed
    torch.testing.assert_close(chunk.features[0, :, 2, :, 0], torch.tensor([[0.0, 1, 2]] * 3))  # rows kept


def test_frames_without_a_box_are_invalid_and_never_start_an_episode():
    tracks = [_track(0, 15, missing=(0, 4, 5, 9, 14))]
    episodes = _episodes(TrackingEnvironment(tracks, slots=4, episode_length=6, seed=3), tracks, chunks=30, steps=6)
    assert all(episode["frames"][0] not in (0, 4, 5, 9, 14) for episode in episodes)
    # some episodes did cross a missing frame (and _episodes checked it was invalid there)
    assert any(set(episode["frames"]) & {4, 5, 9} for episode in episodes)


def test_a_slot_whose_episode_ends_restarts_at_the_next_chunk():
    tracks = [_track(0, 8), _track(1, 4)]
    env = TrackingEnvironment(tracks, slots=1, episode_length=5, random_start=False, reverse_prob=0.0, flip_prob=0.0,
                              seed=0)
    lengths = []
    for _ in range(12):
        first = env.next_chunk(3)
        assert first.restart.tolist() == [True]
        track = int(first.features[0, 0, 0, 0, 0]) // 100
        length = min(5, len(tracks[track].features))
        lengths.append(length)
        assert first.valid[0].tolist() == [True, True, True]
        second = env.next_chunk(3)
        assert second.restart.tolist() == [False]  # the episode goes on: its recurrent state is carried
        assert second.valid[0].tolist() == [True] * (length - 3) + [False] * (6 - length)
        assert (second.features[0, :length - 3, 0, 0, 0] % 100).tolist() == list(range(3, length))
        assert second.features[0, length - 3:].abs().sum() == 0 and second.location_inputs.abs().sum() == 0
    assert set(lengths) == {4, 5}  # the 4-frame track ends before episode_length
    whole = TrackingEnvironment([tracks[0]], slots=1, episode_length=None, random_start=False, reverse_prob=0.0,
                                flip_prob=0.0)
    assert whole.next_chunk(5).valid.all() and whole.next_chunk(5).valid[0].tolist() == [True] * 3 + [False] * 2
    assert whole.next_chunk(5).restart.all()  # a video played to its end starts again


def test_fixed_start_forwards_starts_at_the_first_frame_with_a_box():
    tracks = [_track(0, 10, missing=(0, 1, 9))]
    env = TrackingEnvironment(tracks, slots=3, episode_length=4, random_start=False, reverse_prob=0.0, flip_prob=0.0,
                              seed=5)
    for _ in range(4):
        chunk = env.next_chunk(4)
        assert chunk.restart.all()
        assert (chunk.features[:, :, 0, 0, 0] % 100).tolist() == [[2, 3, 4, 5]] * 3
        torch.testing.assert_close(chunk.location_inputs[:, 0], tracks[0].locations[2].expand(3, 4))
    # backwards with a fixed start: from the last frame with a box
    env = TrackingEnvironment(tracks, slots=1, episode_length=4, random_start=False, reverse_prob=1.0, flip_prob=0.0)
    chunk = env.next_chunk(4)
    assert (chunk.features[0, :, 0, 0, 0] % 100).tolist() == [8, 7, 6, 5]
    torch.testing.assert_close(chunk.location_inputs[0, 0], tracks[0].locations[8])


def test_track_weights_set_how_often_a_target_is_drawn():
    tracks = [_track(0, 6), _track(1, 6, weight=0.0)]
    episodes = _episodes(TrackingEnvironment(tracks, slots=4, episode_length=6, seed=0), tracks, chunks=10, steps=6)
    assert {episode["track"] for episode in episodes} == {0}


def _assert_chunks_equal(a, b):
    for name in ("features", "location_inputs", "targets", "valid", "restart", "first_features", "first_boxes"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0, msg=name)


def test_environment_resumes_exactly_from_its_state_dict():
    tracks = [_track(0, 12, missing=(6,)), _track(1, 9)]
    settings = dict(slots=3, episode_length=5)  # chunks of 3 frames cut episodes of 5: the state falls mid-episode
    env = TrackingEnvironment(tracks, seed=11, **settings)
    for _ in range(4):
        env.next_chunk(3)
    state = env.state_dict()
    assert isinstance(state["generator"], torch.Tensor)
    assert all(isinstance(value, torch.Tensor) for value in state.values())  # weights_only-safe
    expected = [env.next_chunk(3) for _ in range(6)]
    fresh = TrackingEnvironment(tracks, seed=99, **settings)  # another seed: everything comes from the state
    fresh.load_state_dict(state)
    for a, b in zip(expected, [fresh.next_chunk(3) for _ in range(6)]):
        _assert_chunks_equal(a, b)
    assert any(not chunk.restart.all() for chunk in expected)  # resumed inside episodes


def test_environment_refuses_a_state_of_another_setup():
    tracks = [_track(0, 8), _track(1, 8)]
    env = TrackingEnvironment(tracks, slots=2)
    env.next_chunk(3)
    with pytest.raises(ValueError, match="same --slots"):
        TrackingEnvironment(tracks, slots=3).load_state_dict(env.state_dict())
    state = env.state_dict()
    state["track"] = torch.tensor([1, 1])
    with pytest.raises(ValueError, match="same training data"):
        TrackingEnvironment(tracks[:1], slots=2).load_state_dict(state)


def test_training_tracks_and_environment_reject_bad_input():
    with pytest.raises(ValueError, match="no frames"):
        TrainingTrack("v", torch.zeros(0, 3, 2, 2), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="4 feature rows but 3 boxes"):
        TrainingTrack("v", torch.zeros(4, 3, 2, 2), torch.full((3, 4), 0.5))
    with pytest.raises(ValueError, match="fewer than two frames"):
        TrainingTrack("v", torch.zeros(3, 3, 2, 2), torch.tensor([[NAN] * 4, [0.5] * 4, [NAN] * 4]))
    with pytest.raises(ValueError, match="at least one"):
        TrackingEnvironment([])
    with pytest.raises(ValueError, match="feature shape"):
        TrackingEnvironment([_track(0, 4), TrainingTrack("w", torch.zeros(4, 3, 4, 4), torch.full((4, 4), 0.5))])
    with pytest.raises(ValueError, match="episode_length"):
        TrackingEnvironment([_track(0, 4)], episode_length=1)


# -- observation: s_1 reaches μ -----------------------------------------------------------------------------------------
FEATURES = (16, 5, 5)


def _recurrent(observation: str, **overrides) -> RecurrentTracker:
    torch.manual_seed(0)
    settings = dict(hidden_size=12, observation=observation, grid_size=2, location_scale=5.0)
    settings.update(overrides)
    return RecurrentTracker(FEATURES, **settings).eval()


def _maps(frames: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, frames, *FEATURES, generator=torch.Generator().manual_seed(seed))


BOX_A = torch.tensor([[0.3, 0.3, 0.2, 0.3]])
BOX_B = torch.tensor([[0.7, 0.6, 0.3, 0.2]])


def _mu(recurrent, maps, s1, first_box):
    location_inputs = torch.zeros(1, maps.shape[1], 4)
    location_inputs[:, 0] = s1
    with torch.no_grad():
        mu, _ = recurrent(maps, location_inputs, recurrent.initial_state(maps[:, 0], first_box))
    return mu


def _trained_like(recurrent: RecurrentTracker) -> RecurrentTracker:
    """Random LSTM weights everywhere, as after training (a residual tracker starts with four zeroed cell rows)."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in recurrent.lstm.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return recurrent


@pytest.mark.parametrize("observation", ["paper", "template"])
@pytest.mark.parametrize("output", ["absolute", "residual"])
def test_the_location_input_s1_changes_mu_on_the_first_frame(observation, output):
    recurrent, maps = _trained_like(_recurrent(observation, output=output)), _maps()
    mu_a = _mu(recurrent, maps, BOX_A, BOX_A)
    mu_b = _mu(recurrent, maps, BOX_B, BOX_A)  # only s_1 of the location inputs differs
    assert (mu_a[:, 0] - mu_b[:, 0]).abs().max() > 1e-3
    # and it is s_1 alone: the same inputs give the same μ
    torch.testing.assert_close(_mu(recurrent, maps, BOX_A, BOX_A), mu_a, rtol=0, atol=0)


@pytest.mark.parametrize("observation", ["paper", "template"])
def test_an_untrained_residual_tracker_repeats_the_first_box(observation):
    recurrent, maps = _recurrent(observation, output="residual"), _maps()
    mu = _mu(recurrent, maps, BOX_B, BOX_B)
    torch.testing.assert_close(mu, BOX_B[:, None].expand(1, maps.shape[1], 4), rtol=0, atol=0)


@pytest.mark.parametrize("observation", ["paper", "template"])
def test_a_residual_tracker_moves_at_most_residual_scale_per_frame(observation):
    recurrent = _trained_like(_recurrent(observation, output="residual", residual_scale=0.1))
    maps = _maps(frames=8)
    mu = _mu(recurrent, maps, BOX_A, BOX_A)
    previous = torch.cat([BOX_A[:, None], mu[:, :-1].clamp(0, 1)], dim=1)  # fed back as a valid box
    moves = (mu - previous).abs()
    assert moves.max() <= 0.1 + 1e-6 and moves.max() > 0.01


def test_template_first_box_changes_mu_on_later_frames():
    recurrent, maps = _recurrent("template"), _maps()
    mu_a = _mu(recurrent, maps, BOX_A, BOX_A)
    mu_b = _mu(recurrent, maps, BOX_A, BOX_B)  # same location inputs, another box handed to initial_state
    assert ((mu_a[:, 1:] - mu_b[:, 1:]).abs().amax(-1) > 1e-3).all()


def test_template_without_global_grid_still_sees_the_first_box():
    recurrent, maps = _recurrent("template", grid_size=0), _maps()
    assert recurrent.observation.in_features == 4 + FEATURES[1] ** 2 + 14
    mu_a, mu_b = _mu(recurrent, maps, BOX_A, BOX_A), _mu(recurrent, maps, BOX_A, BOX_B)
    assert ((mu_a[:, 1:] - mu_b[:, 1:]).abs().amax(-1) > 1e-3).all()


def _unit_cells(feature_map: torch.Tensor) -> torch.Tensor:
    """What the backbone hands out: every cell's channel vector of unit length."""
    return F.normalize(feature_map, dim=-3)


def test_template_descriptor_is_the_normalised_sum_of_the_cells_inside_the_box():
    size = 4  # cell centres at 0.125, 0.375, 0.625, 0.875
    cells = _unit_cells(torch.randn(1, 6, size, size, generator=torch.Generator().manual_seed(0)))

    def by_hand(rows, columns):
        total = sum(cells[0, :, r, c] for r in rows for c in columns)
        return (total / total.norm())[None]

    # box over the top-left 2x2 cells (x, y in [0.05, 0.45]) and over the bottom-right 2 columns x 1 row
    region_a = template_descriptor(cells, torch.tensor([[0.25, 0.25, 0.4, 0.4]]))
    region_b = template_descriptor(cells, torch.tensor([[0.75, 0.875, 0.4, 0.2]]))
    torch.testing.assert_close(region_a, by_hand([0, 1], [0, 1]))
    torch.testing.assert_close(region_b, by_hand([3], [2, 3]))
    assert (region_a - region_b).abs().max() > 0.1
    torch.testing.assert_close(region_a.norm(dim=1), torch.ones(1))
    # a box smaller than a cell still takes the cell under its centre
    torch.testing.assert_close(template_descriptor(cells, torch.tensor([[0.6, 0.1, 0.01, 0.01]])), by_hand([0], [2]))
    # batched: each box reads its own map
    batched = template_descriptor(cells.expand(2, -1, -1, -1),
                                  torch.tensor([[0.25, 0.25, 0.4, 0.4], [0.75, 0.875, 0.4, 0.2]]))
    torch.testing.assert_close(batched, torch.cat([region_a, region_b]))


def test_template_observation_matches_the_first_box_in_later_frames():
    """A target vector in one cell of frame 1, in another cell of frame 2: the observation the FC layer receives on
    frame 2 holds the similarity map peaking at the target's new cell and a global soft-argmax at its centre."""
    channels, size = FEATURES[0], FEATURES[1]
    generator = torch.Generator().manual_seed(1)
    maps = 0.1 * torch.randn(1, 2, channels, size, size, generator=generator)
    maps[0, :, 0] -= 1.0  # the background points away from the target's channel
    target = torch.zeros(channels)
    target[0] = 1.0
    maps[0, 0, :, 1, 1] = target  # frame 1: cell (row 1, column 1), centre (0.3, 0.3)
    maps[0, 1, :, 3, 4] = target  # frame 2: moved to row 3, column 4, centre (0.9, 0.7)
    maps = _unit_cells(maps)
    recurrent = _recurrent("template", grid_size=0, temperature=0.01)
    seen = []
    recurrent.observation.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    box = torch.tensor([[0.3, 0.3, 0.1, 0.1]])
    location_inputs = torch.zeros(1, 2, 4)
    location_inputs[:, 0] = box
    with torch.no_grad():
        recurrent(maps, location_inputs, recurrent.initial_state(maps[:, 0], box))
    observation = torch.cat(seen, dim=-2).reshape(2, -1)[1]  # frame 2: [s_t (4), similarity (S²), 14 small inputs]
    assert observation.shape == (4 + size * size + 14,)
    similarity = observation[4:4 + size * size].view(size, size)
    assert divmod(int(similarity.argmax()), size) == (3, 4)
    assert float(similarity.max()) == pytest.approx(1.0, abs=1e-5)  # the very descriptor of frame 1
    global_x, global_y = (observation[4 + size * size:4 + size * size + 2] / recurrent.location_scale).tolist()
    assert global_x == pytest.approx(0.9, abs=0.05) and global_y == pytest.approx(0.7, abs=0.05)
    # the first box is among the inputs of every frame (the last four of the small ones)
    torch.testing.assert_close(observation[-4:] / recurrent.location_scale, box[0])
