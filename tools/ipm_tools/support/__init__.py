"""Support work on the fleet: tickets (error reports and feature requests), runbooks run through ansible-runner.

``TicketStore`` keeps the tickets of a support dir (see ``ipm_tools.support.tickets``).
"""

from .tickets import TicketError, TicketStore

__all__ = ["TicketError", "TicketStore"]
