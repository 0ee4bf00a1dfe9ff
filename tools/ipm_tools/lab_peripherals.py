"""Simulated peripherals of a lab terminal (runs ON the terminal as ipm-peripherals.service).

This file is copied into each terminal as /usr/local/lib/ipm-lab/peripherals.py; it uses only the
Python standard library plus python3-yaml (both in the terminal image).

For every peripheral of /etc/ipm/interfaces.yml it opens a pseudo-terminal (a serial line), links
its device as /dev/ipm/<name> and answers a tiny line protocol on it, so that interfaces are real
devices to open, inspect and talk to:

    STATUS -> "<type> <name> OK"
    ID     -> "<type> <name> <model> <serial_number>"
    other  -> "ERR unknown command"
"""

import os
import selectors
import signal
import socket
import sys
import tty

import yaml

INTERFACES = "/etc/ipm/interfaces.yml"
HARDWARE = "/etc/ipm/hardware.yml"
DEVICE_DIR = "/dev/ipm"


def _notify_ready() -> None:
    """Tell systemd (Type=notify) that every device link exists."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.sendto(b"READY=1", address)


def _load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle) or {}
    except FileNotFoundError:
        return {}


def _answer(line: str, peripheral: dict, hardware: dict) -> str:
    command = line.strip().upper()
    kind, name = peripheral.get("type", peripheral["name"]), peripheral["name"]
    if command == "STATUS":
        return f"{kind} {name} OK"
    if command == "ID":
        return f"{kind} {name} {hardware.get('model', '?')} {hardware.get('serial_number', '?')}"
    return "ERR unknown command"


def main() -> int:
    peripherals = _load(INTERFACES).get("interfaces") or []
    hardware = _load(HARDWARE)
    os.makedirs(DEVICE_DIR, exist_ok=True)
    selector = selectors.DefaultSelector()
    links = []
    keep_open = []
    for peripheral in peripherals:
        master, slave = os.openpty()
        tty.setraw(slave)
        # Keep the slave side open too, so the master never reads EOF between two clients.
        keep_open.append(slave)
        link = os.path.join(DEVICE_DIR, peripheral["name"])
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.ttyname(slave), link)
        links.append(link)
        selector.register(master, selectors.EVENT_READ, (peripheral, bytearray()))

    def stop(_signum, _frame):
        for link in links:
            if os.path.lexists(link):
                os.unlink(link)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    _notify_ready()
    print(f"ipm-peripherals: {len(links)} devices under {DEVICE_DIR}: {', '.join(links)}", flush=True)
    while True:
        for key, _events in selector.select():
            peripheral, buffer = key.data
            try:
                buffer.extend(os.read(key.fd, 1024))
            except OSError:
                continue
            while b"\n" in buffer or b"\r" in buffer:
                cut = min(i for i in (buffer.find(b"\n"), buffer.find(b"\r")) if i >= 0)
                line = buffer[:cut].decode(errors="replace")
                del buffer[: cut + 1]
                if line.strip():
                    os.write(key.fd, (_answer(line, peripheral, hardware) + "\r\n").encode())


if __name__ == "__main__":
    sys.exit(main())
