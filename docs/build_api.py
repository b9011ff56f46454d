"""Build the runtime's API reference, HTML generated from the docstrings by pdoc:

    python docs/build_api.py              # -> docs/api/index.html
    python docs/build_api.py OUT_DIR

Every public module of `foal_edge` gets a page and the index links each one. The pages are
not committed (`docs/api/` is ignored): build them after changing a docstring. Needs pdoc
(`pip install pdoc`, or the `dev` extra)."""

from __future__ import annotations

import pkgutil
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def public_modules() -> list[str]:
    """foal_edge and every submodule whose name has no part starting with an underscore.
    Listed explicitly because pdoc, given a package with `__all__`, leaves out its submodules."""
    import foal_edge

    names = ["foal_edge"] + [m.name for m in pkgutil.walk_packages(foal_edge.__path__, "foal_edge.")]
    return [n for n in names if not any(part.startswith("_") for part in n.split("."))]


def build(out: Path | str = ROOT / "docs" / "api") -> list[str]:
    """Write the reference to `out`; returns the modules documented."""
    import pdoc
    import pdoc.doc
    import pdoc.render

    modules = public_modules()
    out = Path(out)
    pdoc.render.configure(docformat="markdown", show_source=False, search=False)
    with warnings.catch_warnings():  # a package without __all__ brings its submodules twice: one page each
        warnings.filterwarnings("ignore", message="The module specification")
        pdoc.pdoc(*modules, output_directory=out)
    # pdoc's index redirects to the package page, which links only what __all__ names; the
    # module list it renders for several packages links every page.
    index = pdoc.render.env.get_template("index.html.jinja2").render(
        all_modules={name: pdoc.doc.Module.from_name(name) for name in modules}, root_module_name=None)
    (out / "index.html").write_text(index, encoding="utf-8")
    return modules


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's foal_edge, not another installed copy
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "api"
    documented = build(target)
    print(f"{len(documented)} modules -> {target / 'index.html'}")
