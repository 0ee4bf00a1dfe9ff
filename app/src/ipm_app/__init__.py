"""ipm-app: the terminal application under maintenance (a simulated parking / ticketing service).

Its version, parameter schema and deliberate defects come from the release it is shipped in
(``manifest.yml`` next to ``bin/`` and ``lib/``), never from this code.
"""
