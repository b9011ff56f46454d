"""Writing a benchmark's results: NAME.json (everything) and NAME.md (the table), printed too."""

from __future__ import annotations

import json
from pathlib import Path


def write(out: Path, results: dict, markdown) -> dict:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    text = markdown(results)
    out.with_suffix(".md").write_text(text)
    print(text)
    return results
