"""The HTTP server of ipm-aptrepo: a directory served read-only over HTTP/1.1 (keep-alive), quietly.

apt fetches a dozen small files per terminal per ``apt-get update``; HTTP/1.1 with keep-alive lets
it reuse one connection for all of them (``python -m http.server`` answers HTTP/1.0, one
connection per file). Threaded, so 20 terminals are served at once.

Run as a module by ``ipm_tools.aptrepo.serve_repository`` (a subprocess a test can stop and start
again) or in the foreground by ``ipm-aptrepo serve``. The first line on standard output is
``serving http://ADDRESS:PORT/`` once the socket listens, so a parent learns the port that
``--port 0`` chose. With ``--parent-pid`` the server ends when that process is gone (a test killed
hard leaves no server behind).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import signal
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

PR_SET_PDEATHSIG = 1


class QuietHandler(SimpleHTTPRequestHandler):
    """Files of the served directory over HTTP/1.1; requests are not logged (apt makes many)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        return None


class RepositoryHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(directory: str, address: str, port: int) -> RepositoryHTTPServer:
    """A server bound to ADDRESS:PORT serving DIRECTORY (OSError when the address cannot be bound)."""
    handler = functools.partial(QuietHandler, directory=directory)
    return RepositoryHTTPServer((address, port), handler)


def url_of(server: RepositoryHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM this process when its parent ends (Linux prctl), and stop now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        sys.exit(0)


def serve_forever(server: RepositoryHTTPServer) -> None:
    """Serve until SIGTERM or Ctrl-C; the socket is closed on the way out."""

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ipm_tools.aptrepo_server", description=__doc__.splitlines()[0])
    parser.add_argument("--directory", required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args(argv)
    if args.parent_pid:
        _die_with_parent(args.parent_pid)
    try:
        server = make_server(args.directory, args.address, args.port)
    except OSError as exc:
        print(f"cannot listen on {args.address}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"serving {url_of(server)}", flush=True)
    serve_forever(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
