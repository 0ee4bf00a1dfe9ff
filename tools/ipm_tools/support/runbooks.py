"""The runbook catalog: ``playbooks/runbooks/<name>.yml``, each with its metadata in its first play.

A runbook is a playbook whose first play carries the variable ``ipm_runbook``::

    vars:
      ipm_runbook:
        purpose: Restart ipm-app on the terminal and wait until /health answers ok.
        symptoms: [the terminal's screen is frozen]     # when to use it
        prerequisites: [the terminal answers over SSH]  # what it needs
        skill: l1                                       # l1 | l2: who may run it alone
        maintenance_type: corrective                    # corrective | preventive | evolutive | adaptive
        changes_terminal: true
        risk: low                                       # low | medium | high

:func:`load_catalog` reads every runbook of a folder and checks its metadata; a problem raises
:class:`CatalogError` naming the file, the key path, what was expected and what was found.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ipm_tools import PROJECT_ROOT

RUNBOOKS_DIR = PROJECT_ROOT / "playbooks" / "runbooks"
SKILLS = ("l1", "l2")
RISKS = ("low", "medium", "high")
MAINTENANCE_TYPES = ("corrective", "preventive", "evolutive", "adaptive")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
REQUIRED = ("purpose", "symptoms", "prerequisites", "skill", "maintenance_type", "changes_terminal", "risk")


class CatalogError(Exception):
    """A runbook file or its metadata is not usable (one line: file, key path, expected, found)."""


@dataclass(frozen=True)
class Runbook:
    name: str
    path: Path
    purpose: str
    symptoms: list[str] = field(default_factory=list)
    prerequisites: list[str] = field(default_factory=list)
    skill: str = "l2"
    maintenance_type: str = "corrective"
    changes_terminal: bool = True
    risk: str = "medium"

    def as_dict(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        return data

    def matches(self, word: str) -> bool:
        """True when ``word`` appears (case-insensitive) in the name, purpose, symptoms or prerequisites."""
        word = word.lower()
        texts = [self.name, self.purpose, *self.symptoms, *self.prerequisites, self.skill, self.risk]
        return any(word in text.lower() for text in texts)


def _found(value) -> str:
    text = repr(value)
    return (text[:57] + "...") if len(text) > 60 else text


def _problem(path: Path, keys: str, expected: str, value) -> CatalogError:
    return CatalogError(f"{path}: {keys}: expected {expected}, found {_found(value)} ({type(value).__name__})")


def _strings(path: Path, key: str, value) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item.strip() for item in value):
        raise _problem(path, f"ipm_runbook.{key}", "a non-empty list of sentences", value)
    return [item.strip() for item in value]


def _choice(path: Path, key: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _problem(path, f"ipm_runbook.{key}", "one of " + ", ".join(choices), value)
    return value


def load_runbook(path: str | Path) -> Runbook:
    """Read and check one runbook file."""
    path = Path(path)
    name = path.stem
    if not NAME_RE.match(name):
        raise CatalogError(
            f"{path}: the file name {name!r} is not a runbook name: use lower-case letters, digits and _"
        )
    try:
        plays = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)  # the C safe loader when there is one
    except OSError as error:
        raise CatalogError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise CatalogError(f"{path}:{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(plays, list) or not plays or not isinstance(plays[0], dict):
        raise _problem(path, "(top)", "a playbook: a list of plays", plays)
    variables = plays[0].get("vars")
    meta = variables.get("ipm_runbook") if isinstance(variables, dict) else None
    if not isinstance(meta, dict):
        raise CatalogError(
            f"{path}: [0].vars.ipm_runbook: missing: the first play must carry the runbook's metadata "
            f"({', '.join(REQUIRED)}), see docs/support.md"
        )
    missing = [key for key in REQUIRED if key not in meta]
    if missing:
        raise CatalogError(f"{path}: ipm_runbook: missing key(s) {', '.join(missing)}; see docs/support.md")
    unknown = sorted(set(meta) - set(REQUIRED))
    if unknown:
        raise CatalogError(f"{path}: ipm_runbook: unknown key(s) {', '.join(unknown)}; expected {', '.join(REQUIRED)}")
    purpose = meta["purpose"]
    if not isinstance(purpose, str) or not purpose.strip():
        raise _problem(path, "ipm_runbook.purpose", "one sentence saying what the runbook does", purpose)
    if not isinstance(meta["changes_terminal"], bool):
        raise _problem(path, "ipm_runbook.changes_terminal", "true or false", meta["changes_terminal"])
    return Runbook(
        name=name,
        path=path.resolve(),
        purpose=" ".join(purpose.split()),
        symptoms=_strings(path, "symptoms", meta["symptoms"]),
        prerequisites=_strings(path, "prerequisites", meta["prerequisites"]),
        skill=_choice(path, "skill", meta["skill"], SKILLS),
        maintenance_type=_choice(path, "maintenance_type", meta["maintenance_type"], MAINTENANCE_TYPES),
        changes_terminal=meta["changes_terminal"],
        risk=_choice(path, "risk", meta["risk"], RISKS),
    )


def load_catalog(root: str | Path | None = None) -> dict[str, Runbook]:
    """Every runbook of ``root`` (default ``playbooks/runbooks``) by name; :class:`CatalogError` on any problem."""
    root = Path(root) if root is not None else RUNBOOKS_DIR
    if not root.is_dir():
        raise CatalogError(f"{root}: no such runbook folder")
    catalog = {}
    for path in sorted(root.glob("*.yml")):
        runbook = load_runbook(path)
        catalog[runbook.name] = runbook
    if not catalog:
        raise CatalogError(f"{root}: no runbook (*.yml) in this folder")
    return catalog


def get_runbook(name: str, root: str | Path | None = None) -> Runbook:
    """One runbook by name (only its file is read), or :class:`CatalogError` listing the known ones."""
    root = Path(root) if root is not None else RUNBOOKS_DIR
    path = root / f"{name}.yml"
    if not NAME_RE.match(str(name)) or not path.is_file():
        known = ", ".join(sorted(p.stem for p in root.glob("*.yml"))) or "none"
        raise CatalogError(f"unknown runbook {name!r}: known runbooks are {known} (ipm-support runbooks)")
    return load_runbook(path)
