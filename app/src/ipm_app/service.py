"""The ipm-app service: parameters, health endpoint, transactions in sqlite, simulated traffic.

Started by ``ipm-app.service`` as ``/opt/ipm/app/current/bin/ipm-app --config /etc/ipm/app.yml``.
Every path is a flag so tests run it unprivileged on 127.0.0.1 with a free port.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import logging.handlers
import os
import random
import signal
import socket
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

try:  # a built release ships a copy of the collection's module_utils/release_manifest.py
    from ipm_app import _release_manifest as rm
except ImportError:  # running from the source tree: the collection itself is importable
    from ansible_collections.ipm.fleet.plugins.module_utils import release_manifest as rm

# lib/ipm_app/service.py inside a release: the release directory is two levels up.
DEFAULT_RELEASE_DIR = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = "/etc/ipm/app.yml"
DEFAULT_DATA_DIR = "/var/lib/ipm/app"
DEFAULT_LOG_FILE = "/var/log/ipm/app.log"
DEFAULT_HARDWARE_FILE = "/etc/ipm/hardware.yml"
DEFAULT_PORT = 8080
# sysexits.h EX_CONFIG: the unit's RestartPreventExitStatus stops restarts on bad parameters.
EXIT_CONFIG = 78
PAYMENT_METHODS = ("card", "contactless", "cash")

log = logging.getLogger("ipm-app")


class StartupError(Exception):
    """The service cannot start; the message says why and what to do (one line each)."""

    exit_code = EXIT_CONFIG


class ListenError(StartupError):
    """The address is busy or missing: may pass on a restart, so not EX_CONFIG."""

    exit_code = 1


# --- release and parameters -----------------------------------------------------------------


def load_release(release_dir: Path) -> dict:
    """The manifest of the release this code runs from."""
    path = release_dir / "manifest.yml"
    try:
        return rm.load_definition(str(path))
    except rm.ReleaseError as exc:
        raise StartupError(f"release manifest invalid: {exc}") from None


def read_parameters_file(path: str) -> object:
    """Parse the parameters file (the raw mapping, not yet validated)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StartupError(f"{path}: parameters file not found: write it (see docs/application.md)") from None
    except OSError as exc:
        raise StartupError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return rm.load_yaml_text(text, path)
    except rm.ReleaseError as exc:
        raise StartupError(str(exc)) from None


def check_parameters(release: dict, path: str) -> dict:
    """Effective parameters (defaults + file) or StartupError listing every problem, one per line."""
    raw = read_parameters_file(path)
    errors = rm.validate_parameters(release, raw)
    if errors:
        lines = [f"{path}: {error} (release {release['version']})" for error in errors]
        raise StartupError("\n".join(lines))
    return rm.effective_parameters(release, raw)


def check_hardware(release: dict, hardware_file: str) -> str | None:
    """The terminal's model; StartupError when this release does not run on it."""
    try:
        text = Path(hardware_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None  # a developer machine or a test: no hardware identity to check
    except OSError as exc:
        raise StartupError(f"{hardware_file}: cannot read: {exc.strerror}") from None
    try:
        hardware = rm.load_yaml_text(text, hardware_file) or {}
    except rm.ReleaseError as exc:
        raise StartupError(str(exc)) from None
    model = hardware.get("model") if isinstance(hardware, dict) else None
    models = release["compatibility"]["models"]
    if model is not None and model not in models:
        raise StartupError(
            f"{hardware_file}: model {model} is not supported by release {release['version']} "
            f"(expected one of {', '.join(models)}): install a release made for this model"
        )
    return model


# --- data store -------------------------------------------------------------------------------


class TransactionStore:
    """Transactions in sqlite, shared by the HTTP threads and the simulated writer."""

    def __init__(self, data_dir: str):
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.path = str(Path(data_dir) / "transactions.sqlite3")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS transactions ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL, amount REAL NOT NULL,"
            " currency TEXT NOT NULL, method TEXT NOT NULL, source TEXT NOT NULL, release TEXT NOT NULL)"
        )

    def add(self, amount: float, currency: str, method: str, source: str, release: str) -> dict:
        created_at = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO transactions (created_at, amount, currency, method, source, release)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (created_at, amount, currency, method, source, release),
            )
        return {"id": cursor.lastrowid, "created_at": created_at, "amount": amount, "currency": currency,
                "method": method, "source": source}  # fmt: skip

    def summary(self, last: int = 10) -> dict:
        with self._lock:
            count = self._db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
            rows = self._db.execute(
                "SELECT id, created_at, amount, currency, method, source FROM transactions ORDER BY id DESC LIMIT ?",
                (last,),
            ).fetchall()
        keys = ("id", "created_at", "amount", "currency", "method", "source")
        return {"count": count, "last": [dict(zip(keys, row, strict=True)) for row in rows]}

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --- the service ------------------------------------------------------------------------------


class App:
    """State shared by the request handlers and the background writer."""

    def __init__(self, release: dict, parameters: dict, store: TransactionStore):
        self.release = release
        self.version = release["version"]
        self.parameters = parameters
        self.digest = rm.parameters_digest(parameters)
        self.store = store
        self.started = time.monotonic()
        # The release's deliberate defect, {"kind", "healthy_for_s"} (see docs/application.md), or None.
        self.defect = rm.defect_of(release)
        self._defect_logged = False
        self.stopping = threading.Event()

    def uptime(self) -> float:
        return time.monotonic() - self.started

    def health(self) -> tuple[int, dict]:
        uptime = self.uptime()
        status = "ok"
        defect = self.defect
        if defect and defect["kind"] == "health-fails-after-start" and uptime > defect["healthy_for_s"]:
            status = "failing"
            if not self._defect_logged:
                self._defect_logged = True
                log.error("receipt encoder stopped: health check failing (defect of release %s)", self.version)
        body = {"version": self.version, "status": status, "uptime_s": round(uptime, 1),
                "parameters_sha256": self.digest}  # fmt: skip
        return (200 if status == "ok" else 503), body

    def max_amount(self) -> float:
        # The limit's name changed between releases (max_amount -> max_transaction_amount in 3.0.0).
        for name in ("max_transaction_amount", "max_amount"):
            if name in self.parameters:
                return float(self.parameters[name])
        return float("inf")

    def record(self, request: object, source: str) -> tuple[int, dict]:
        """Validate one transaction request and store it; (HTTP status, body)."""
        if not self.parameters.get("payment_enabled", True):
            return 503, {"error": "payments are disabled on this terminal (parameter payment_enabled)"}
        if not isinstance(request, dict):
            return 400, {"error": "expected a JSON object with amount and method"}
        amount = request.get("amount")
        method = request.get("method", "card")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
            return 400, {"error": f"amount: expected a number > 0, found {amount!r}"}
        if amount > self.max_amount():
            return 422, {"error": f"amount: {amount} is above this terminal's limit {self.max_amount()}"}
        if method not in PAYMENT_METHODS:
            return 400, {"error": f"method: expected one of {', '.join(PAYMENT_METHODS)}, found {method!r}"}
        if method == "contactless" and not self.parameters.get("contactless_enabled", False):
            return 422, {"error": "method: contactless is not enabled on this terminal"}
        entry = self.store.add(float(amount), self.parameters["currency"], method, source, self.version)
        log.info("transaction %s: %.2f %s by %s (%s)", entry["id"], amount, entry["currency"], method, source)
        return 201, entry

    def simulate(self) -> None:
        """Write a plausible transaction every transaction_interval_s seconds until stopped."""
        interval = self.parameters.get("transaction_interval_s", 0)
        if not interval:
            return
        generator = random.Random(self.digest)
        while not self.stopping.wait(interval):
            amount = round(min(self.max_amount(), generator.uniform(0.5, 12.0)), 2)
            method = generator.choice(["card", "cash"])
            try:
                self.record({"amount": amount, "method": method}, "simulated")
            except sqlite3.Error as exc:
                log.error("simulated transaction not written: %s", exc)


class IPv6HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer is AF_INET only: this one binds IPv6 addresses ("::" takes IPv4 too)."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        # A wildcard is a wildcard whatever net.ipv6.bindv6only says: "::" also answers on 127.0.0.1.
        with contextlib.suppress(OSError, AttributeError):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def bind_address(address: str) -> tuple[str, type]:
    """(host to bind, server class) for a listen_address: IPv6 when it has a ':' (brackets allowed)."""
    address = address.strip()
    if ":" in address:
        return address.strip("[]"), IPv6HTTPServer
    return address, ThreadingHTTPServer


def shown_address(address: str, port: int) -> str:
    """ADDRESS:PORT as in a URL: ``[::1]:8080`` for IPv6."""
    host = bind_address(address)[0]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_server(address: str, port: int, handler: type) -> ThreadingHTTPServer:
    """A threading HTTP server bound to ADDRESS (IPv4 or IPv6) and PORT."""
    host, server_class = bind_address(address)
    return server_class((host, port), handler)


class Handler(BaseHTTPRequestHandler):
    """GET /health, GET /transactions, POST /transactions."""

    server_version = "ipm-app"
    app: App  # set on the subclass made for one server

    def _reply(self, status: int, body: dict) -> None:
        data = (json.dumps(body, sort_keys=True) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._reply(*self.app.health())
        elif path == "/transactions":
            self._reply(200, self.app.store.summary())
        else:
            self._reply(404, {"error": f"no such resource {path}: try /health or /transactions"})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/transactions":
            self._reply(404, {"error": "POST goes to /transactions"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > 65536:
            self._reply(413, {"error": "request too large"})
            return
        try:
            request = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            self._reply(400, {"error": "body is not JSON"})
            return
        try:
            self._reply(*self.app.record(request, "api"))
        except sqlite3.Error as exc:
            log.error("transaction not written: %s", exc)
            self._reply(500, {"error": f"data store error: {exc}"})

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ipm-app",
        description="The terminal application: health on :8080, transactions in sqlite, parameters from app.yml.",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"parameters file (default {DEFAULT_CONFIG})")
    parser.add_argument(
        "--check-config", metavar="FILE", help="validate FILE against this release's schema, exit 0 (valid) or 1"
    )
    parser.add_argument(
        "--print-digest", metavar="FILE", help="print the parameters_sha256 that /health reports for FILE"
    )
    parser.add_argument("--version", action="store_true", help="print this release's version and exit")
    parser.add_argument("--listen-address", help="address to bind (default: parameter listen_address)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"sqlite directory (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--log-file", default=DEFAULT_LOG_FILE, help=f"log file (default {DEFAULT_LOG_FILE})")
    parser.add_argument(
        "--hardware-file", default=DEFAULT_HARDWARE_FILE, help=f"hardware identity (default {DEFAULT_HARDWARE_FILE})"
    )
    parser.add_argument("--release-dir", type=Path, default=DEFAULT_RELEASE_DIR, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def setup_logging(log_file: str, level: str) -> None:
    stderr = logging.StreamHandler(sys.stderr)  # the journal adds its own time stamps
    stderr.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handlers: list[logging.Handler] = [stderr]
    try:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        # Terminals have small disks: rotate at 5 MiB, keep 3 old files.
        file_handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=5 << 20, backupCount=3, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers.append(file_handler)
    except OSError as exc:
        print(f"ipm-app: WARNING {log_file}: cannot write the log file ({exc.strerror}); logging to stderr only",
              file=sys.stderr)  # fmt: skip
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=handlers, force=True)


def check_only(release: dict, path: str, digest: bool) -> int:
    """--check-config and --print-digest: 0 when valid, 1 with the reasons on stderr."""
    try:
        parameters = check_parameters(release, path)
    except StartupError as exc:
        print(f"ipm-app {release['version']}: invalid parameters:\n{exc}", file=sys.stderr)
        return 1
    if digest:
        print(rm.parameters_digest(parameters))
    else:
        print(f"{path}: valid parameters for ipm-app {release['version']}")
    return 0


def serve(args: argparse.Namespace, release: dict) -> int:
    parameters = check_parameters(release, args.config)
    model = check_hardware(release, args.hardware_file)
    setup_logging(args.log_file, parameters.get("log_level", "INFO"))
    address = args.listen_address or parameters.get("listen_address", "0.0.0.0")
    try:
        store = TransactionStore(args.data_dir)
    except (OSError, sqlite3.Error) as exc:
        raise ListenError(f"cannot open the transaction store in {args.data_dir}: {exc}: check --data-dir") from None
    app = App(release, parameters, store)
    handler = type("BoundHandler", (Handler,), {"app": app})
    try:
        server = make_server(address, args.port, handler)
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ListenError(
            f"cannot listen on {shown_address(address, args.port)}: {reason}: check listen_address and --port"
        ) from None
    server.daemon_threads = True

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        app.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    writer = threading.Thread(target=app.simulate, name="simulated-transactions", daemon=True)
    writer.start()
    log.info(
        "ipm-app %s started on %s (model %s, parameters_sha256 %s, data %s)",
        app.version, shown_address(address, args.port), model or "unknown", app.digest, store.path,
    )  # fmt: skip
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        app.stopping.set()
        server.server_close()
        writer.join(timeout=2)
        store.close()
        log.info("ipm-app %s stopped", app.version)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        release = load_release(args.release_dir)
    except StartupError as exc:
        print(f"ipm-app: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.version:
        print(release["version"])
        return 0
    if args.check_config or args.print_digest:
        return check_only(release, args.check_config or args.print_digest, digest=bool(args.print_digest))
    try:
        return serve(args, release)
    except StartupError as exc:
        message = str(exc).replace("\n", "\nipm-app: ")
        print(f"ipm-app {release['version']}: refusing to start:\nipm-app: {message}", file=sys.stderr)
        if os.environ.get("INVOCATION_ID"):  # under systemd: say what to look at next
            print("ipm-app: fix /etc/ipm/app.yml, then: systemctl restart ipm-app", file=sys.stderr)
        return exc.exit_code
