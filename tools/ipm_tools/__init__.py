"""Command-line tools of the ipm.fleet project (lab, registry, audit, ...).

The tools call the collection's domain logic in ``plugins/module_utils`` and ``plugins/plugin_utils``
under its collection name, ``ansible_collections.ipm.fleet``. From a clone (the supported install,
``pip install -e .``) that name resolves through ``collections/ansible_collections/ipm/fleet``, a
symlink to the repository root, so the ``collections`` folder is put on ``sys.path`` here once.
"""

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_COLLECTIONS = PROJECT_ROOT / "collections"

if _COLLECTIONS.is_dir() and str(_COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(_COLLECTIONS))


def closed_output() -> int:
    """What a tool returns when its reader went away (``ipm-config ... | head``): no traceback, no noise.

    Standard output is pointed at /dev/null so that Python's final flush does not complain again.
    """
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0
