"""ipm.fleet.compat through real Ansible templating (the collection found from the clone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]

PLAYBOOK = """
- name: Compatibility through the filter
  hosts: localhost
  gather_facts: false
  vars:
    manifest: {version: "3.0.0", compatibility: {models: [PS-300, TK-110], os: [debian-12]}}
    old_terminal: {hardware: {model: PS-200}, os: {id: debian-12}}
    new_terminal: {hardware: {model: TK-110}, os: {id: debian-12}}
  tasks:
    - name: Write both answers
      ansible.builtin.copy:
        content: "{{ {'old': manifest | ipm.fleet.compat(old_terminal), 'new': manifest | ipm.fleet.compat(new_terminal)} | to_json }}"
        dest: "{{ answer_file }}"
        mode: "0644"
"""


def test_filter_in_a_playbook(tmp_path):
    playbook = tmp_path / "compat.yml"
    playbook.write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    answer_file = tmp_path / "answer.json"
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [
            str(bin_dir / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            str(playbook),
            "-e",
            f"answer_file={answer_file}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(answer_file.read_text())
    assert answer["new"] == {"compatible": True, "reasons": []}
    assert answer["old"]["compatible"] is False
    assert "hardware model PS-200 is not supported by release 3.0.0" in answer["old"]["reasons"][0]


def test_filter_rejects_a_non_boolean_flag():
    from ansible.errors import AnsibleFilterError

    from ansible_collections.ipm.fleet.plugins.filter.compat import compat

    try:
        compat({"version": "1.0.0"}, {}, allow_downgrade="yes")
    except AnsibleFilterError as error:
        assert "allow_downgrade must be true or false" in str(error)
    else:
        raise AssertionError("a string flag must be refused")
