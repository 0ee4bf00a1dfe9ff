# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The module attributes every ipm.fleet module documents, written once.

Use with ``extends_documentation_fragment: [ipm.fleet.attributes]`` (check_mode, diff_mode), plus
``ipm.fleet.attributes.action``, ``ipm.fleet.attributes.facts`` or ``ipm.fleet.attributes.platform``
where they apply; the module's own ``attributes:`` then only says ``support`` (and ``details``,
``platforms``) for each.
"""

from __future__ import annotations


class ModuleDocFragment:
    # check_mode and diff_mode: every module.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
"""

    # Modules with an action plugin of the same name.
    ACTION = r"""
options: {}
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
"""

    # Modules that return ansible_facts.
    FACTS = r"""
options: {}
attributes:
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
"""

    # Where the module runs: the module sets platforms (and details).
    PLATFORM = r"""
options: {}
attributes:
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
"""
