"""The API reference (docs/reference/) documents every public top-level name of sparsepai."""

import pathlib
import re
import types

import sparsepai

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIRECTIVE = re.compile(r"^:::\s+(sparsepai(?:\.\w+)+)\s*$", re.M)


def documented() -> set:
    return {m.group(1) for page in (ROOT / "docs" / "reference").glob("*.md")
            for m in DIRECTIVE.finditer(page.read_text())}


def test_every_public_name_is_in_the_reference():
    names = {f"sparsepai.{n}" for n in sparsepai.__all__
             if not isinstance(getattr(sparsepai, n), types.ModuleType)}
    assert names, "sparsepai.__all__ names no functions or classes"
    missing = sorted(names - documented())
    assert not missing, f"add `::: NAME` lines to a page of docs/reference/ for: {missing}"


def test_every_documented_name_exists():
    for name in sorted(documented()):
        obj = sparsepai
        for part in name.split(".")[1:]:
            obj = getattr(obj, part)  # AttributeError names what the reference gets wrong
