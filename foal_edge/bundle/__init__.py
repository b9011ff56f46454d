"""The bundle: a directory with `manifest.json` and the graph files it names.

Export writes it (export/bundle.py), the runtime reads and verifies it. The manifest is
plain versioned JSON, no pickle anywhere. Everything the runtime needs to preprocess
inputs and interpret outputs is in it, so the runtime never needs the training code.

    types.py     the manifest as dataclasses (Manifest, GraphInfo, TensorInfo)
    schema.py    the manifest's JSON schema, checked field by field
    files.py     confinement of every named file to the bundle, hashing, ONNX external data
    load.py      load_manifest: read, confine, hash, check external data; demo_file
    contract.py  what each graph is fed and returns, by name, and that the graphs fit together
"""

from .contract import GRAPH_IO, OPTIONAL_OUTPUTS, check_graph_io, check_graphs_fit
from .files import bundle_file, onnx_external_data, sha256_file
from .load import demo_file, load_manifest
from .schema import check_manifest
from .types import GRAPHS, MANIFEST, OPTIONAL_GRAPHS, SCHEMA_VERSION, GraphInfo, Manifest, TensorInfo

__all__ = ["Manifest", "GraphInfo", "TensorInfo", "load_manifest", "demo_file", "check_manifest", "check_graph_io",
           "check_graphs_fit", "bundle_file", "onnx_external_data", "sha256_file", "GRAPHS", "OPTIONAL_GRAPHS",
           "GRAPH_IO", "OPTIONAL_OUTPUTS", "MANIFEST", "SCHEMA_VERSION"]
