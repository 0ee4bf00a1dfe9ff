#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: wg_key
short_description: A WireGuard private key born on the machine that uses it; only its public key comes back
version_added: 0.1.0
description:
  - Makes sure O(path) holds a WireGuard private key, generated on this machine with C(wg genkey)
    under umask 077 and written atomically with mode 0600, owner root. The private key never leaves
    the machine, the module returns only public keys (C(wg pubkey)), so the audit log records the
    public key and nothing else.
  - A key file that others could have read (any group or other permission, or not owned by root) is
    refused with a message naming the file and the fix; it is not silently repaired, since a key
    that may have been read must be replaced. O(state=next) (the first step of a rotation) is the fix.
  - "Rotation in steps, so the tunnel does not drop: O(state=next) stages a new key in C(<path>.next);
    O(state=switched) makes it the key (the old one kept as C(<path>.previous)) and gives it to the
    running O(interface); the hub then learns the new public key (M(ipm.fleet.wg_hub)); O(state=committed)
    removes the previous key once the new one has a handshake, or O(state=reverted) puts it back if the
    hub did not take the new one."
options:
  path:
    description: The private key file.
    type: path
    default: /etc/wireguard/ipm0.key
  interface:
    description: The WireGuard interface that uses the key (given the new key by O(state=switched) and O(state=reverted) when it is up).
    type: str
    default: ipm0
  state:
    description:
      - V(present) generates the key when there is none.
      - V(next) stages a new key in C(<path>.next) (kept when already staged); generates the key instead when there is none yet.
      - V(switched) makes the staged key the key; nothing to do when none is staged.
      - V(committed) removes C(<path>.previous); V(reverted) puts it back as the key.
    type: str
    choices: [present, next, switched, committed, reverted]
    default: present
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details: Says what it would generate, stage or switch; public keys of keys that do not exist yet are null.
  diff_mode:
    support: none
    details: A private key has no diff to show.
  platform:
    platforms: debian
    details: Runs on the terminal or the hub as root, with wireguard-tools installed.
seealso:
  - module: ipm.fleet.wg_config
  - module: ipm.fleet.wg_hub
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: The terminal's key (generated on the terminal, only the public key returned)
  ipm.fleet.wg_key:
    path: /etc/wireguard/ipm0.key
  register: vpn_key

- name: Rotation, step 1 - stage the next key
  ipm.fleet.wg_key:
    state: next

- name: Rotation, step 2 - switch to it (right before the hub learns it)
  ipm.fleet.wg_key:
    state: switched
    interface: ipm0
"""

RETURN = r"""
public_key:
  description: The public key of the key in O(path) after the run; null in check mode when it would be generated.
  returned: always
  type: str
  sample: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
next_public_key:
  description: The public key of the staged key C(<path>.next); null when none is staged.
  returned: always
  type: str
previous_public_key:
  description: The public key of C(<path>.previous) (the key before a switch); null when there is none.
  returned: always
  type: str
generated:
  description: Whether a new key was generated in O(path).
  returned: always
  type: bool
staged:
  description: Whether a new key was staged in C(<path>.next) by this run.
  returned: always
  type: bool
switched:
  description: Whether the key changed to another one (O(state=switched) or O(state=reverted)).
  returned: always
  type: bool
live:
  description: Whether the running O(interface) was given the new key.
  returned: always
  type: bool
path:
  description: The key file.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipm.fleet.plugins.module_utils import wireguard as wg


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/wireguard/ipm0.key"),
            interface=dict(type="str", default="ipm0"),
            state=dict(type="str", default="present", choices=["present", "next", "switched", "committed", "reverted"]),
        ),
        supports_check_mode=True,
    )
    path, interface, state = module.params["path"], module.params["interface"], module.params["state"]
    paths = wg.key_paths(path)

    def run(argv, data=None):
        return module.run_command(argv, data=data, binary_data=True)

    if os.geteuid() != 0:
        module.fail_json(msg=f"{path}: the WireGuard key is root's: connect as root or set become: true")
    result = dict(changed=False, generated=False, staged=False, switched=False, live=False, path=path)
    try:
        # A key others may have read is refused, unless this run replaces it (state=next).
        problem = wg.key_file_problem(path)
        if problem and state != "next":
            module.fail_json(msg=problem, **result)
        for extra in ("next", "previous"):
            extra_problem = wg.key_file_problem(paths[extra])
            if extra_problem:
                module.fail_json(msg=extra_problem, **result)
        if state in ("present", "next") and not os.path.exists(path):
            result.update(changed=True, generated=True)
            if not module.check_mode:
                wg.generate_key(path, run)
        elif state == "next" and not os.path.exists(paths["next"]):
            result.update(changed=True, staged=True)
            if not module.check_mode:
                wg.generate_key(paths["next"], run)
        elif state == "switched" and os.path.exists(paths["next"]):
            result.update(changed=True, switched=True)
            if not module.check_mode:
                wg.switch_key(path, interface, run)
                result["live"] = wg.interface_exists(interface)
        elif state == "reverted" and os.path.exists(paths["previous"]):
            result.update(changed=True, switched=True)
            if not module.check_mode:
                wg.revert_key(path, interface, run)
                result["live"] = wg.interface_exists(interface)
        elif state == "committed" and os.path.exists(paths["previous"]):
            result.update(changed=True)
            if not module.check_mode:
                os.unlink(paths["previous"])
        for field, file in (
            ("public_key", path),
            ("next_public_key", paths["next"]),
            ("previous_public_key", paths["previous"]),
        ):
            result[field] = wg.public_key(file, run) if os.path.exists(file) else None
    except (wg.WireGuardError, OSError) as error:
        module.fail_json(msg=str(error), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
