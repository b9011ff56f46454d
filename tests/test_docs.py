"""The README's examples run as written, against a bundle at build/foal-demo (here the tiny
test bundle, built by the same command as the demo one), and every CLI command has help.
```python blocks are complete programs and run here; ```py blocks are fragments (a server
elsewhere, the user's own arrays)."""

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_python_examples_run_as_written(tiny_bundle, tmp_path, monkeypatch):
    (tmp_path / "build").mkdir()
    os.symlink(tiny_bundle[1], tmp_path / "build" / "foal-demo")
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    assert blocks, "the README has no python example"
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
        assert out.getvalue(), "an example printed nothing"


@pytest.mark.parametrize("command", ["predict", "batch", "live", "info"])
def test_every_command_has_help(command, capsys):
    from foal_edge.__main__ import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    assert sub.description or sub.format_usage()
    assert all(a.help for a in sub._actions if a.dest != "help"), command


def test_training_help_has_defaults_and_every_option_explained():
    from training.synthetic import main as synthetic  # noqa: F401  (imports without running)
    from training.train import build_parser

    text = build_parser().format_help()
    assert "(default: 40)" in text and all(a.help for a in build_parser()._actions)
