"""The facts patch compliance needs: holds from dpkg's status file, a pending reboot, on real files in a tree."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from ansible_collections.ipm.fleet.plugins.module_utils import terminal_facts as tf

STATUS = """Package: ipm-runtime
Status: hold ok installed
Priority: optional
Version: 1.0

Package: openssl
Status: install ok installed
Version: 3.0.11-1~deb12u2

Package: python3
Priority: important
Section: python
Status: hold ok installed
Version: 3.11.2-1+b1

Package: ipm-removed
Status: hold ok not-installed

Package: zlib1g
Status: install ok installed
Version: 1:1.2.13.dfsg-1
Description: says Status: hold in a description
 Status: hold continuation lines are not fields"""


def tree(root: Path, files: dict[str, str]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def test_held_packages_are_read_from_dpkg_status():
    assert tf.parse_dpkg_holds(STATUS) == ["ipm-removed", "ipm-runtime", "python3"]
    assert tf.parse_dpkg_holds("") == []
    assert tf.parse_dpkg_holds("Package: a\nStatus: install ok installed\nVersion: 1\n") == []


def test_os_facts_carry_holds_and_no_reboot(tmp_path):
    root = tree(tmp_path, {"etc/os-release": "ID=debian\nVERSION_ID=12\n", "var/lib/dpkg/status": STATUS})
    facts = tf.collect_os(str(root))
    assert facts["held_packages"] == ["ipm-removed", "ipm-runtime", "python3"]
    assert facts["reboot_required"] == {"required": False, "packages": [], "since": None}
    assert facts["packages"]["python3"] == "3.11.2-1+b1"  # a held package is still installed


def test_a_pending_reboot_with_its_packages_and_since_when(tmp_path):
    root = tree(
        tmp_path,
        {
            "var/run/reboot-required": "*** System restart required ***\n",
            "var/run/reboot-required.pkgs": "ipm-kernel-sim\nlinux-image-amd64\nipm-kernel-sim\n\n",
        },
    )
    when = dt.datetime(2026, 11, 30, 22, 15, 7, tzinfo=dt.UTC).timestamp()
    os.utime(root / "var/run/reboot-required", (when, when))
    assert tf.reboot_required(str(root)) == {
        "required": True,
        "packages": ["ipm-kernel-sim", "linux-image-amd64"],
        "since": "2026-11-30T22:15:07Z",
    }


def test_a_reboot_required_without_a_package_list(tmp_path):
    root = tree(tmp_path, {"var/run/reboot-required": ""})
    facts = tf.reboot_required(str(root))
    assert facts["required"] is True and facts["packages"] == [] and facts["since"].endswith("Z")


def test_an_unreadable_dpkg_status_still_reports_the_reboot(tmp_path):
    root = tree(tmp_path, {"etc/os-release": "ID=debian\nVERSION_ID=12\n", "var/run/reboot-required": ""})
    facts = tf.collect_os(str(root))
    assert "packages_unknown" in facts and "held_packages" not in facts
    assert facts["reboot_required"]["required"] is True
