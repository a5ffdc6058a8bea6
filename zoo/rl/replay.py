"""Experience replay (Lin 1992; Mnih et al. 2015): a fixed-capacity circular buffer of transitions, sampled uniformly.

A transition is a dict of tensors of per-transition shape, e.g. {"state": (T, 2), "action": (), "reward": (), ...}.
The first push fixes the keys, shapes and dtypes and preallocates (capacity, *shape) storage per key, so pushing costs
one copy and sampling one index per key. When full, the oldest transition is overwritten (slot ``position``).

The buffer owns no random state: `sample` draws from the `torch.Generator` it is given, so a run that checkpoints its
generator with `state_dict()` resumes with the same contents, the same next slot and the same next samples.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


class ReplayBuffer:
    def __init__(self, capacity: int, device: torch.device | str = "cpu"):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.storage: dict[str, torch.Tensor] = {}
        self.position = 0  # the slot the next push writes
        self.size = 0  # filled slots: min(pushes, capacity)

    def __len__(self) -> int:
        return self.size

    def _allocate(self, transition: Mapping[str, torch.Tensor]) -> None:
        self.storage = {
            key: torch.empty((self.capacity, *value.shape), dtype=value.dtype, device=self.device)
            for key, value in transition.items()
        }

    def _check(self, transition: Mapping[str, torch.Tensor], leading: tuple[int, ...] = ()) -> None:
        if set(transition) != set(self.storage):
            raise KeyError(f"transition keys {sorted(transition)} differ from the buffer's {sorted(self.storage)}")
        for key, value in transition.items():
            expected = (*leading, *self.storage[key].shape[1:])
            if tuple(value.shape) != expected:
                raise ValueError(f"{key!r} has shape {tuple(value.shape)}, the buffer stores {expected}")

    def push(self, transition: Mapping[str, torch.Tensor]) -> None:
        """Store one transition (tensors of per-transition shape; Python numbers are made 0-d tensors)."""
        transition = {key: torch.as_tensor(value) for key, value in transition.items()}
        if not transition:
            raise ValueError("a transition needs at least one entry")
        if not self.storage:
            self._allocate(transition)
        self._check(transition)
        for key, value in transition.items():
            self.storage[key][self.position] = value.to(self.device)
        self.position = (self.position + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def extend(self, batch: Mapping[str, torch.Tensor]) -> None:
        """Store N transitions given with a leading dimension N, in order (as N pushes)."""
        batch = {key: torch.as_tensor(value) for key, value in batch.items()}
        sizes = {value.shape[0] for value in batch.values()}
        if len(sizes) != 1:
            raise ValueError(f"entries disagree on the number of transitions: {sorted(sizes)}")
        n = sizes.pop()
        if n == 0:
            return
        if not self.storage:
            self._allocate({key: value[0] for key, value in batch.items()})
        self._check(batch, (n,))
        if n > self.capacity:  # only the last `capacity` survive; they land where N pushes would put them
            skip = n - self.capacity
            self.position = (self.position + skip) % self.capacity
            batch = {key: value[skip:] for key, value in batch.items()}
            n = self.capacity
        slots = (self.position + torch.arange(n)) % self.capacity
        for key, value in batch.items():
            self.storage[key][slots.to(self.device)] = value.to(self.device)
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample_indices(self, batch_size: int, generator: torch.Generator | None = None,
                       replacement: bool = False) -> torch.Tensor:
        """Slots drawn uniformly from the filled ones; without replacement by default (the authors' `random.sample`).
        ``generator`` must be a CPU generator (indices are drawn on the CPU)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty buffer")
        if replacement:
            return torch.randint(0, self.size, (batch_size,), generator=generator)
        if batch_size > self.size:
            raise ValueError(f"batch of {batch_size} without replacement from {self.size} transitions")
        return torch.randperm(self.size, generator=generator)[:batch_size]

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               replacement: bool = False) -> dict[str, torch.Tensor]:
        """A batch: each entry of shape (batch_size, *per-transition shape), on the buffer's device."""
        indices = self.sample_indices(batch_size, generator, replacement).to(self.device)
        return {key: value[indices] for key, value in self.storage.items()}

    def state_dict(self) -> dict:
        """Contents and position (the filled slots, copied; a checkpoint of an unfilled buffer stays small)."""
        return {
            "capacity": self.capacity,
            "position": self.position,
            "size": self.size,
            "storage": {key: value[: self.size].detach().cpu().clone() for key, value in self.storage.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"checkpoint capacity {state['capacity']} differs from this buffer's {self.capacity}")
        size, position = int(state["size"]), int(state["position"])
        if not 0 <= size <= self.capacity or not 0 <= position < self.capacity:
            raise ValueError(f"inconsistent checkpoint: size {size}, position {position}, capacity {self.capacity}")
        stored = state["storage"]
        self.storage, self.size, self.position = {}, 0, 0
        if stored:
            self._allocate({key: value[0] if len(value) else value.new_empty(value.shape[1:])
                            for key, value in stored.items()})
            for key, value in stored.items():
                if value.shape[0] != size:
                    raise ValueError(f"{key!r} holds {value.shape[0]} transitions, the checkpoint says {size}")
                self.storage[key][:size] = value.to(self.device)
        elif size:
            raise ValueError(f"checkpoint says {size} transitions but stores none")
        self.size, self.position = size, position
