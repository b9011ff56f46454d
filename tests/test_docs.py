"""The documentation holds: the ```python blocks of README.md and docs/*.md run as written,
against a bundle at build/foal-demo (here the tiny test bundle, built by the same command as
the demo one); every relative link points to a file that exists (and a heading, where it
names one); every docs page is reachable from the README; the API reference builds with an
index that links every public module; every CLI command has help.
```python blocks are complete programs and run here; ```py blocks are fragments (a server
elsewhere, a webcam) and ```bash blocks are shell."""

import contextlib
import importlib.util
import io
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages written on other branches; links to them are allowed until they land. Remove each
# name once its page is merged (test_pending_pages_are_still_pending says when).
ALLOWED_PENDING: set[str] = set()  # pages linked before they are written (none today)

FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """(first line number, code) of each ```python block."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def prose(page: Path) -> str:
    """The page without its fenced blocks (a link inside a code block is code, not a link)."""
    return re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", prose(page), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page)) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=name)
def test_the_python_examples_run_as_written(page, tiny_bundle, tmp_path, monkeypatch):
    (tmp_path / "build").mkdir()
    os.symlink(tiny_bundle[1], tmp_path / "build" / "foal-demo")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}  # one per page: a page's blocks run in order and share it
    for line, block in python_blocks(page):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile("\n" * line + block, str(page), "exec"), namespace)  # tracebacks give the page's lines
        assert out.getvalue(), f"{name(page)}:{line}: the example printed nothing"


def test_the_readme_has_a_runnable_example():
    assert python_blocks(ROOT / "README.md"), "the README has no ```python example"


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_relative_link_points_to_a_file_that_exists(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
        elif not file.exists():
            if name(file) not in ALLOWED_PENDING:
                broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {name(file)})")
    assert not broken, f"{name(page)}: " + "; ".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {name((ROOT / t.partition("#")[0]).resolve()) for t in relative_links(ROOT / "README.md")}
    pages = {name(p) for p in PAGES[1:]} | ALLOWED_PENDING
    assert not pages - linked, f"docs pages the README does not link: {sorted(pages - linked)}"


def test_pending_pages_are_still_pending():
    landed = sorted(p for p in ALLOWED_PENDING if (ROOT / p).exists())
    assert not landed, f"{landed} exist now: remove them from ALLOWED_PENDING in {name(Path(__file__))}"


def test_the_api_reference_builds_and_its_index_links_every_public_module(tmp_path):
    pytest.importorskip("pdoc")
    spec = importlib.util.spec_from_file_location("build_api", ROOT / "docs" / "build_api.py")
    build_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_api)
    modules = build_api.build(tmp_path)
    assert {"foal_edge", "foal_edge.predictor", "foal_edge.streaming", "foal_edge.errors", "foal_edge.media",
            "foal_edge.batch", "foal_edge.live", "foal_edge.serve", "foal_edge.wire",
            "foal_edge.client"} <= set(modules)
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    for module in modules:
        page = module.replace(".", "/") + ".html"
        assert f'href="{page}"' in index, f"the index does not link {module}"
        assert (tmp_path / page).stat().st_size > 0


@pytest.mark.parametrize("command", ["predict", "batch", "live", "serve", "info"])
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
