"""Inference backends, one file each. A backend runs one graph: `run(feeds) -> outputs`."""
