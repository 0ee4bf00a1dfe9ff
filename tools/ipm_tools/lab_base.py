"""The base tree every lab terminal boots: debootstrap bookworm, adjusted, cached by its recipe's hash.

Built once into a temporary directory and renamed when complete (a crash never leaves a half tree
that looks usable), under ``/var/cache/ipm-lab/base-<hash>`` where the hash covers the recipe of
``lab_plan.base_recipe`` (suite, mirror, packages, adjustments); rebuilt only when it changes.
Terminals share it read-only; their own files go to their overlay layers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ipm_tools.lab_plan import (
    BASE_MASKED_UNITS,
    BASE_MIRROR,
    BASE_PACKAGES,
    BASE_SUITE,
    LabError,
    base_recipe,
    recipe_hash,
)
from ipm_tools.lab_state import flock

CACHE_DIR = Path("/var/cache/ipm-lab")
DEB_CACHE = CACHE_DIR / "debs"
BASE_MARKER = ".ipm-lab-base.json"


def base_path() -> Path:
    return CACHE_DIR / f"base-{recipe_hash(base_recipe())}"


def adjust_base(tree: Path) -> None:
    """Make a debootstrap tree a base every terminal can share (per-terminal parts go to its layer).

    Part of the recipe: bump ``lab_plan.BASE_RECIPE_VERSION`` when this changes.
    """
    for key in (tree / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Empty machine-id: each terminal writes its own in its layer.
    (tree / "etc/machine-id").write_text("")
    masked = tree / "etc/systemd/system"
    for unit in BASE_MASKED_UNITS:
        link = masked / unit
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to("/dev/null")
    for wants in masked.glob("*.wants"):
        for link in wants.iterdir():
            if link.name in BASE_MASKED_UNITS or link.name == "e2scrub_reap.service":
                link.unlink()
    for cache in (tree / "var/cache/apt/archives").glob("*.deb"):
        cache.unlink()
    # No Debian sources: a lab terminal never reaches deb.debian.org; its packages come from the
    # project's own repository on loopback, whose key goes to /etc/apt/keyrings (signed-by).
    for sources in (tree / "etc/apt/sources.list", *(tree / "etc/apt/sources.list.d").glob("*")):
        if sources.is_file() or sources.is_symlink():
            sources.unlink()
    (tree / "etc/apt/keyrings").mkdir(mode=0o755, parents=True, exist_ok=True)
    for lists in (tree / "var/lib/apt/lists").glob("*_dists_*"):
        lists.unlink()


def ensure_base(progress: Callable[[str], None]) -> Path:
    """The cached base tree of the current recipe, built once (atomically) if missing."""
    base = base_path()
    if (base / BASE_MARKER).is_file():
        return base
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with flock(CACHE_DIR / "build.lock"):
        if (base / BASE_MARKER).is_file():
            return base
        # A crash mid-build leaves only a temporary directory, never something named like a base.
        for stale in CACHE_DIR.glob(".base-*.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = CACHE_DIR / f".{base.name}.tmp-{os.getpid()}"
        log = CACHE_DIR / f"{base.name}.build.log"
        DEB_CACHE.mkdir(parents=True, exist_ok=True)
        progress(f"building base tree {base} (debootstrap {BASE_SUITE}, takes a minute or two; log: {log})")
        started = time.monotonic()
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--cache-dir={DEB_CACHE}",
            f"--include={','.join(BASE_PACKAGES)}",
            BASE_SUITE,
            str(tmp),
            BASE_MIRROR,
        ]
        with open(log, "w") as output:
            result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            last = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise LabError(f"debootstrap failed (exit {result.returncode}): {last[0]} (full log: {log})")
        adjust_base(tmp)
        (tmp / BASE_MARKER).write_text(json.dumps(base_recipe(), indent=2) + "\n")
        tmp.rename(base)
        progress(f"base tree ready in {time.monotonic() - started:.0f}s: {base}")
    return base
