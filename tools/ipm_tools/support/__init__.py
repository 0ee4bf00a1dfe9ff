"""Support work on the fleet: tickets (error reports and feature requests), runbooks run through ansible-runner.

The public Python API:

- ``TicketStore`` keeps the tickets of a support dir (``ipm_tools.support.tickets``);
- ``load_catalog(root=None)`` reads the runbooks of ``playbooks/runbooks/`` (``ipm_tools.support.runbooks``);
- ``run_runbook(runbook, terminal, ticket, support_dir=...)`` runs one on a terminal for a ticket and
  returns a ``RunResult`` (``ipm_tools.support.runner``); ``RunError`` when nothing could be started.
"""

from .runbooks import CatalogError, Runbook, load_catalog
from .runner import RunError, RunResult, run_runbook
from .tickets import TicketError, TicketStore

__all__ = [
    "CatalogError",
    "RunError",
    "RunResult",
    "Runbook",
    "TicketError",
    "TicketStore",
    "load_catalog",
    "run_runbook",
]
