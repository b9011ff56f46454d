"""The graph I/O contract: what each graph is fed and must return, by name, and the checks
that a bundle's graphs, as the backend reads them from the files, keep it and fit together."""

from __future__ import annotations

from ..errors import BundleError
from .types import GraphInfo, Manifest

# What each graph is fed and must return (the Predictor feeds and reads these by name).
GRAPH_IO = {
    "audio": ({"waveform": 2}, {"hidden": 3}),
    "video": ({"frames": 4}, {"embeddings": 2}),
    "fusion": ({"audio": 3, "audio_mask": 2, "video": 3, "video_mask": 2},
               {"logits": 2, "audio_logits": 2, "video_logits": 2}),
    "preprocess": ({"frames": 4, "resize_x": 2, "resize_y": 2}, {"pixels": 4}),
}
OPTIONAL_OUTPUTS = {"fusion": {"attributes": 2}}


def check_graph_io(bundle, name: str, graph: GraphInfo, actual: dict) -> None:
    """The manifest's description of a graph against the graph file itself (`actual`: name ->
    (dtype, shape) as the backend read it): the same names, dtypes, ranks and fixed dims, and
    the names the runtime feeds and reads all present. Outputs are then read by name."""
    fix = f"the manifest does not describe {graph.file}: copy the bundle again or rebuild it"
    inputs, outputs = GRAPH_IO[name]
    declared = {t.name: t for t in graph.inputs + graph.outputs}
    if len(declared) != len(graph.inputs) + len(graph.outputs):
        raise BundleError(f"{bundle}: graphs.{name} declares a tensor name twice; {fix}")
    for role, want, listed in (("input", inputs, graph.inputs), ("output", outputs, graph.outputs)):
        names = {t.name for t in listed}
        allowed = set(want) | (set(OPTIONAL_OUTPUTS.get(name, {})) if role == "output" else set())
        for n in sorted(set(want) - names):
            raise BundleError(f"{bundle}: graphs.{name} has no {role} {n!r} (the {name} graph's {role}s are "
                              f"{sorted(allowed)}); {fix}")
        for n in sorted(names - allowed):
            raise BundleError(f"{bundle}: graphs.{name} {role} {n!r} is not one the runtime knows "
                              f"({sorted(allowed)}); {fix}")
    for n in sorted(set(declared) ^ set(actual)):
        where = "the manifest" if n in declared else graph.file
        raise BundleError(f"{bundle}: graphs.{name}: tensor {n!r} is in {where} only; {fix}")
    ranks = {**inputs, **outputs, **OPTIONAL_OUTPUTS.get(name, {})}
    for n, t in declared.items():
        dtype, shape = actual[n]
        if t.dtype != dtype:
            raise BundleError(f"{bundle}: graphs.{name} tensor {n!r} is {dtype} in {graph.file}, the manifest says "
                              f"{t.dtype}; {fix}")
        if len(t.shape) != len(shape) or len(shape) != ranks[n]:
            raise BundleError(f"{bundle}: graphs.{name} tensor {n!r} has rank {len(shape)} in {graph.file}, the "
                              f"manifest says {len(t.shape)} and the runtime needs {ranks[n]}; {fix}")
        for i, (a, b) in enumerate(zip(t.shape, shape)):
            if isinstance(a, int) and isinstance(b, int) and a != b:
                raise BundleError(f"{bundle}: graphs.{name} tensor {n!r} dim {i} is {b} in {graph.file}, the "
                                  f"manifest says {a}; {fix}")
    expected = {"float32"} if name != "preprocess" else {"float32", "uint8"}
    for n, (dtype, _) in actual.items():
        if n in dict(inputs) and dtype not in expected:
            raise BundleError(f"{bundle}: graphs.{name} input {n!r} is {dtype}; the runtime feeds "
                              f"{' or '.join(sorted(expected))}; {fix}")


def check_graphs_fit(bundle, manifest: Manifest, io: dict[str, dict]) -> tuple[int, int]:
    """The graphs must fit together (`io`: graph -> its runner's io): the encoders' widths are
    the fusion head's, and the heads give one logit per label (one value per attribute).
    -> (audio feature width, video embedding width)."""
    fix = "the graphs do not fit together: rebuild the bundle from one checkpoint"
    widths = []
    for encoder, output, fusion_input in (("audio", "hidden", "audio"), ("video", "embeddings", "video")):
        produced, consumed = io[encoder][output][1][-1], io["fusion"][fusion_input][1][-1]
        if not isinstance(consumed, int) or (isinstance(produced, int) and produced != consumed):
            raise BundleError(f"{bundle}: the {encoder} graph gives {produced}-wide features, the fusion "
                              f"head takes {consumed}; {fix}")
        widths.append(consumed)
    size = manifest.image_size
    pixels = [io["video"]["frames"][1]] + ([io["preprocess"]["pixels"][1]] if "preprocess" in io else [])
    for shape in pixels:
        if any(isinstance(d, int) and d != size for d in shape[-2:]):
            raise BundleError(f"{bundle}: the manifest's image_size is {size}, the graphs take "
                              f"{shape[-2]}x{shape[-1]} frames; {fix}")
    labels = len(manifest.labels)
    heads = {"logits": labels, "audio_logits": labels, "video_logits": labels}
    if "attributes" in io["fusion"]:
        heads["attributes"] = len(manifest.attributes)
    for output, want in heads.items():
        got = io["fusion"][output][1][-1]
        if got != want:
            raise BundleError(f"{bundle}: fusion output {output!r} has {got} values per clip, the manifest "
                              f"names {want} {'labels' if output != 'attributes' else 'attributes'}; {fix}")
    return widths[0], widths[1]
