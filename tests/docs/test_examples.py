"""Every Python example in README.md and docs/**/*.md runs.

Each fenced ``python`` block is executed in order, the blocks of one file sharing one namespace
(a page builds its example up), in a fresh temporary working folder. A block preceded by an HTML
comment ``<!-- skip: why -->`` is not run (kept for examples that need a GPU or a cluster); the
reason shows in the page source and in the test's skip message. A page whose example imports an
optional third-party package that is not installed (timm, transformers, ...) is skipped, naming it.
"""

from __future__ import annotations

import pathlib
import re
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent>[ ]*)```python[^\n]*\n(?P<body>.*?)^(?P=indent)```[ ]*$",
                   re.M | re.S)
SKIP = re.compile(r"<!--\s*skip:\s*(?P<why>.*?)\s*-->\s*$")
# third-party packages the examples may import that sparsepai itself does not need
OPTIONAL = {"timm", "transformers", "accelerate", "sklearn", "onnx", "onnxruntime", "matplotlib"}


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason or None)`` for every fenced ``python`` block of a Markdown text."""
    blocks = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 2
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        blocks.append((line, textwrap.dedent(m.group("body")), skip.group("why") if skip else None))
    return blocks


PAGES = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
         if python_blocks(p.read_text())]


def test_blocks_are_found():
    # the extraction itself: an indented block, a skipped one, and a block that is not Python
    text = ("x\n```python\na = 1\n```\n- item\n\n  ```python\n  b = 2\n  ```\n"
            "<!-- skip: needs CUDA -->\n```python\nc = 3\n```\n```bash\nls\n```\n")
    assert python_blocks(text) == [(3, "a = 1\n", None), (8, "b = 2\n", None),
                                   (12, "c = 3\n", "needs CUDA")]
    assert ROOT / "README.md" in PAGES and len(python_blocks((ROOT / "README.md").read_text())) >= 3


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs_example__"}
    skipped = []
    for line, code, skip in python_blocks(page.read_text()):
        if skip is not None:
            skipped.append(f"line {line}: {skip}")
            continue
        try:
            exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)
        except ModuleNotFoundError as exc:
            if exc.name not in OPTIONAL:
                raise
            pytest.skip(f"line {line} needs {exc.name}, not installed (an optional extra)")
    if skipped:
        pytest.skip(f"ran the others; not run: {'; '.join(skipped)}")
