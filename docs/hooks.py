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


# Reading order of the navigation: the top level, and the guides. Pages and folders not named
# here follow, by file name (index.md first), so a new page needs no edit here.
_NAV_ORDER = ("index.md", "install.md", "guides", "benchmarks", "reference", "changelog.md")
_GUIDES_ORDER = ("guides/choosing-a-method.md", "guides/training-loops.md", "guides/structured.md",
                 "guides/distributed.md", "guides/autosparse.md", "guides/backends.md",
                 "guides/command-line.md")
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj):(<code>)")


def _first_page(item):
    return item if item.is_page else next(_pages(item.children), None)


def _key(order, name):
    return (order.index(name) if name in order else len(order), name)


def _nav_key(item):
    first = _first_page(item)
    uri = first.file.src_uri if first else ""
    return _key(_NAV_ORDER, uri if item.is_page else uri.split("/")[0])


def _pages(items):
    for item in items:
        if item.is_page:
            yield item
        elif item.children:
            yield from _pages(item.children)


def on_nav(nav, config, files, **kwargs):
    nav.items.sort(key=_nav_key)
    for item in nav.items:
        first = _first_page(item)
        if not item.is_page and first and first.file.src_uri.startswith("guides/"):
            item.children.sort(key=lambda c: _key(_GUIDES_ORDER, _first_page(c).file.src_uri))
    nav.pages = list(_pages(nav.items))
    for i, page in enumerate(nav.pages):
        page.previous_page = nav.pages[i - 1] if i else None
        page.next_page = nav.pages[i + 1] if i + 1 < len(nav.pages) else None
    return nav


def on_page_content(html, page, config, files, **kwargs):
    # docstrings cross-reference in reStructuredText roles (:func:`name`); show just the name
    return _ROLE.sub(r"\1", html)
