"""mkdocs hooks for the sparsepai site.

- Public names: a page writes ``::: sparsepai.topk_mask`` (the name users import); the hook
  rewrites it to the module that defines the object today, so the reference follows the code when
  modules move and never names a private module in the Markdown.
- Benchmark results: every figure and data file under ``benchmarks/results/`` is published at the
  same path in the site, so a benchmark page links ``../results/...`` (see docs/benchmarks/).
"""

from __future__ import annotations

import importlib
import os
import re

from mkdocs.structure.files import File

_DIRECTIVE = re.compile(r"^(:::\s+)(sparsepai(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*$", re.M)
_RESULT_EXTS = (".png", ".svg", ".csv", ".json", ".jsonl", ".txt", ".log")


def _defining_path(public: str) -> str:
    """``sparsepai.optim.MaskedSGD`` -> ``sparsepai.optim.masked.MaskedSGD`` (where it is defined)."""
    parts = public.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))
    if hasattr(obj, "__file__") and not hasattr(obj, "__qualname__"):  # a module
        return obj.__name__
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname:
        raise ValueError(f"docs/hooks.py: {public} is neither a module, a class nor a function")
    return f"{module}.{qualname}"


def on_page_markdown(markdown, page, config, files, **kwargs):
    return _DIRECTIVE.sub(lambda m: m.group(1) + _defining_path(m.group(2)), markdown)


def on_files(files, config, **kwargs):
    root = os.path.dirname(os.path.abspath(config["config_file_path"]))
    results = os.path.join(root, "benchmarks", "results")
    for folder, _, names in os.walk(results):
        for name in sorted(names):
            if name.endswith(_RESULT_EXTS):
                path = os.path.join(folder, name)
                uri = os.path.relpath(path, root).replace(os.sep, "/")
                files.append(File(uri, root, config["site_dir"], config["use_directory_urls"]))
    return files
