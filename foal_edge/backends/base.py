"""`Runner`: what every backend gives the Predictor for one graph, whatever it wraps.

    inputs, outputs   tensor names, in the graph's own order (outputs are read by name)
    io                {name: (dtype, shape)} as the graph file declares them (None or a name
                      for a dynamic dimension); checked against the manifest
    max_shapes        {name: largest shape} where the backend has a limit (TensorRT's
                      optimisation profile); empty where any shape runs
    device            "cpu" or "cuda": where the graph runs
    keeps_on_device   whether run(keep_on_device=True) can leave outputs on the device
    path              the graph file
    run(feeds, keep_on_device=False) -> outputs in `outputs` order
    close()           frees what the runner holds; also on `with` exit
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


class Runner(ABC):
    inputs: list[str]
    outputs: list[str]
    io: dict[str, tuple[str, list]]
    max_shapes: dict[str, tuple[int, ...]]
    device: str
    keeps_on_device: bool = False
    path: Path

    @abstractmethod
    def run(self, feeds: dict, keep_on_device: bool = False) -> list:
        """Run the graph on `feeds` (name -> array; with a backend that keeps outputs on the
        device, also another runner's kept outputs). Returns the outputs in `outputs` order:
        numpy arrays, or with keep_on_device, values left on the device where the backend
        can (`keeps_on_device`); a backend that cannot returns numpy arrays."""

    @abstractmethod
    def close(self) -> None:
        """Free what the runner holds; runs after close raise InferenceError."""

    def fits(self, name: str, shape) -> bool:
        """Whether input `name` of `shape` is within this runner's limits (max_shapes)."""
        limit = self.max_shapes.get(name)
        return limit is None or (len(shape) == len(limit) and all(d <= m for d, m in zip(shape, limit)))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
