"""PEP 517 build backend of sparsepai: setuptools', asking for the torch the user runs.

A C++ extension of torch only loads into the torch it was compiled against (the C++ ABI of
libtorch changes between releases). A build in an isolated environment (pip's default) installs
the build requirements there; a fixed ``torch`` requirement would compile against whichever
release pip picks, usually the newest, not the user's. So ``get_requires_for_build_*`` asks for
the release of the torch installed in the environment pip installs into (``torch==2.13.0`` for
an installed 2.13.0+cpu: the C++ ABI is the release's; the local label names the CUDA variant,
which the index pip builds from may not have, and ``==2.13.0`` still prefers it where it does),
and only where none is installed for a compatible one (``torch>=2.11``), which pip then also
installs as sparsepai's dependency.

``SPARSEPAI_BUILD_TORCH`` overrides the requirement (e.g. ``torch==2.13.0``). Builds without
isolation (``pip install --no-build-isolation .``) use the installed torch as it is and need no
help from here.
"""

from __future__ import annotations

import os
import sysconfig
from importlib import metadata

from setuptools.build_meta import *  # noqa: F401,F403 - the other hooks, unchanged

FALLBACK = "torch>=2.11"


def _installed_torch() -> str | None:
    """The version of torch installed in the environment of the running interpreter, or None.

    An isolated build runs this interpreter with the build environment on ``sys.path`` and the
    environment's own site-packages hidden; sysconfig still names them.
    """
    paths = []
    for key in ("purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path and os.path.isdir(path) and path not in paths:
            paths.append(path)
    for dist in metadata.distributions(path=paths):
        if (dist.metadata["Name"] or "").lower() == "torch":
            return dist.version
    return None


def torch_requirement() -> str:
    """The torch requirement of a build (see the module docstring)."""
    override = os.environ.get("SPARSEPAI_BUILD_TORCH", "").strip()
    if override:
        return override
    version = _installed_torch()
    return f"torch=={version.split('+')[0]}" if version else FALLBACK


# setuptools' own get_requires_* run setup.py to collect setup_requires (we have none), and
# setup.py imports torch, which is what these hooks are asked to provide: so they are not called.
def get_requires_for_build_wheel(config_settings=None):
    return [torch_requirement()]


def get_requires_for_build_editable(config_settings=None):
    return [torch_requirement()]


def get_requires_for_build_sdist(config_settings=None):
    # setup.py describes the extension with torch.utils.cpp_extension, also for an sdist
    return [torch_requirement()]
