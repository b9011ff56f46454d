"""The runtime install: the wheel built from setup.py holds the `foal_edge` package alone
(training, export and benchmarks run from the repository), every runtime subpackage included."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_runtime_wheel_holds_foal_edge_only(tmp_path):
    # Built from a copy, so the build leaves nothing (build/, *.egg-info) in the checkout.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "dist", "runs", "__pycache__",
                                                            "*.egg-info", ".pytest_cache", ".hypothesis", "results"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "dist").glob("foal_edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"foal_edge", wheel.name.split("-py")[0] + ".dist-info"}, sorted(tops)
    files = set(names)
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "foal_edge").rglob("*.py")}
    assert expected <= files, sorted(expected - files)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "foal-edge = foal_edge.__main__:main" in zipfile.ZipFile(wheel).read(entry).decode()
