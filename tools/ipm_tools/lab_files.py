"""The files that make a base tree into one particular lab terminal (pure: text in, text out).

``terminal_files`` returns what ``ipm-lab up`` writes into a terminal's own overlay layer before it
boots: identity, sshd on its own address, hardware identity, peripherals and their simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ipm_tools.lab_plan import TerminalSpec

PERIPHERALS_SCRIPT = Path(__file__).with_name("lab_peripherals.py")
PERIPHERALS_UNIT = "ipm-peripherals.service"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
# Peripheral types that carry a configuration file of their own besides the device.
PAYMENT_CONFIG = "/etc/ipm/payment-module.yml"


@dataclass(frozen=True)
class TerminalFile:
    """One file of a terminal's overlay layer: absolute path on the terminal, content, mode."""

    path: str
    content: str
    mode: int = 0o644


def _yaml(data: object, header: str) -> str:
    return f"# {header}\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def sshd_config(address: str) -> str:
    """sshd drop-in: this terminal's address only, root by key only (the lab key)."""
    return (
        "# Written by ipm-lab: this terminal's own loopback address, root by key only.\n"
        f"ListenAddress {address}:22\n"
        f"HostKey {HOST_KEY}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UseDNS no\n"
        "MaxStartups 100:30:200\n"
    )


def interfaces_document(spec: TerminalSpec) -> dict:
    """Content of /etc/ipm/interfaces.yml: each peripheral with the device it appears as."""
    interfaces = []
    for item in spec.interfaces:
        entry = {"name": item["name"], "type": item["type"], "device": f"/dev/ipm/{item['name']}"}
        # In the registry `device` names the product (verifone-p400); on the terminal it is the device file.
        if "device" in item:
            entry["product"] = item["device"]
        entry.update({key: value for key, value in item.items() if key not in entry and key != "device"})
        if entry["type"] == "payment":
            entry.setdefault("config", PAYMENT_CONFIG)
        interfaces.append(entry)
    return {"interfaces": interfaces}


def payment_module_config(spec: TerminalSpec, name: str) -> dict:
    """A payment module's configuration as a vendor's terminal would carry it."""
    return {
        "device": f"/dev/ipm/{name}",
        "protocol": "zvt-lab-simulator",
        "merchant_id": f"LAB-{spec.serial_number}",
        "timeout_s": 30,
        "tls": False,
    }


PERIPHERALS_UNIT_TEXT = """\
[Unit]
Description=ipm lab: simulated peripherals (serial lines under /dev/ipm)
Documentation=file:/etc/ipm/interfaces.yml
ConditionPathExists=/etc/ipm/interfaces.yml

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/bin/python3 /usr/local/lib/ipm-lab/peripherals.py
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def terminal_files(spec: TerminalSpec, authorized_key: str, machine_id: str) -> list[TerminalFile]:
    """Every file of a terminal's overlay layer that does not depend on the machine (keys aside)."""
    files = [
        TerminalFile("/etc/hostname", f"{spec.terminal_id}\n"),
        TerminalFile("/etc/machine-id", f"{machine_id}\n", 0o444),
        TerminalFile(
            "/etc/hosts",
            f"127.0.0.1\tlocalhost\n{spec.address}\t{spec.terminal_id}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
        TerminalFile("/etc/ssh/sshd_config.d/ipm-lab.conf", sshd_config(spec.address)),
        TerminalFile("/root/.ssh/authorized_keys", authorized_key.strip() + "\n", 0o600),
        TerminalFile(
            "/etc/ipm/hardware.yml",
            _yaml({"model": spec.model, "serial_number": spec.serial_number}, "Hardware identity (ipm-lab)"),
        ),
        TerminalFile("/etc/ipm/interfaces.yml", _yaml(interfaces_document(spec), "Configured peripherals (ipm-lab)")),
        TerminalFile("/usr/local/lib/ipm-lab/peripherals.py", PERIPHERALS_SCRIPT.read_text(encoding="utf-8"), 0o755),
        TerminalFile(f"/etc/systemd/system/{PERIPHERALS_UNIT}", PERIPHERALS_UNIT_TEXT),
    ]
    for item in spec.interfaces:
        if item["type"] == "payment":
            files.append(
                TerminalFile(
                    PAYMENT_CONFIG,
                    _yaml(payment_module_config(spec, item["name"]), "Payment module configuration (ipm-lab)"),
                    0o600,
                )
            )
            break
    return files
