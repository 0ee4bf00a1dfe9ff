"""ipm-awx: job templates generated from the playbooks (every playbook and runbook has one, every survey variable
is one its playbook reads), surveys valid by AWX's survey_spec rules, the EE's requirements in step with
pyproject.toml, and the AWX configuration files loadable as the awx.awx modules expect. See docs/awx.md."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from ipm_tools import awx

PROJECT_ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def templates() -> list[dict]:
    return yaml.safe_load(awx.TEMPLATES_FILE.read_text(encoding="utf-8"))["ipm_awx_job_templates"]


def included_text(playbook: Path) -> str:
    """The playbook, its vars files and task files and the roles it names, as text (a plain reading)."""
    texts, pending, seen = [], [playbook], set()
    while pending:
        path = pending.pop()
        if path in seen or not path.exists():
            continue
        seen.add(path)
        if path.is_dir():
            pending.extend(sorted(path.glob("*/*.yml")))
            continue
        text = path.read_text(encoding="utf-8")
        texts.append(text)
        for name in re.findall(r"(?:import_tasks|include_tasks|file):\s*([\w./-]+\.yml)", text):
            pending.append(path.parent / name)
        for name in re.findall(r"^\s*-\s*([\w./-]+\.yml)\s*$", text, flags=re.M):
            pending.append(path.parent / name)
        for name in re.findall(r"(?:role|name):\s*ipm\.fleet\.(\w+)", text):
            pending.append(PROJECT_ROOT / "roles" / name)
    return "\n".join(texts)


def test_every_playbook_and_runbook_has_a_job_template():
    wanted = {p.relative_to(PROJECT_ROOT).as_posix() for p in (PROJECT_ROOT / "playbooks").glob("*.yml")}
    wanted |= {p.relative_to(PROJECT_ROOT).as_posix() for p in (PROJECT_ROOT / "playbooks" / "runbooks").glob("*.yml")}
    got = [t["playbook"] for t in templates()]
    assert sorted(got) == sorted(wanted)
    assert len({t["name"] for t in templates()}) == len(got)
    for template in templates():
        if template["playbook"].startswith("playbooks/runbooks/"):
            assert template["kind"] == "runbook" and template["name"].startswith("ipm.fleet runbook ")


def test_every_survey_variable_is_one_the_playbook_reads():
    through_plugins = awx.plugin_read_vars()
    assert {"change_id", "ticket_id", "maintenance_type", "justification"} <= through_plugins
    for template in templates():
        path = PROJECT_ROOT / template["playbook"]
        text = included_text(path)
        reads = awx.playbook_reads(path, awx.load_questions())
        for question in template["survey_spec"]["spec"]:
            variable = question["variable"]
            assert variable in reads, (template["name"], variable)
            # independently: the name is in the playbook's own files, or read by authorize / the audit callback
            found = re.search(rf"\b{variable}\b", text) or variable in through_plugins
            assert found, (template["name"], variable)


def test_surveys_ask_what_each_job_needs():
    by_name = {t["name"]: {q["variable"]: q for q in t["survey_spec"]["spec"]} for t in templates()}
    rollout = by_name["ipm.fleet rollout"]
    assert rollout["release"]["required"] and rollout["change_id"]["required"]
    assert not rollout["ticket_id"]["required"]
    assert rollout["window"]["choices"] == ["respect", "ignore"] and rollout["window"]["default"] == "respect"
    assert by_name["ipm.fleet patch"]["patch_scope"]["choices"] == ["security", "all"]
    assert by_name["ipm.fleet parameters"]["change_id"]["required"]
    assert {"terminal", "backup", "replacement"} <= set(by_name["ipm.fleet restore"])
    assert "vpn_rotate" in by_name["ipm.fleet vpn"]
    for name, questions in by_name.items():
        assert "maintenance_type" in questions and not questions["maintenance_type"]["required"]
        if name.startswith("ipm.fleet runbook "):
            assert questions["terminal"]["required"] and questions["ticket_id"]["required"], name
            assert "release" not in questions and "window" not in questions, name


def test_generated_files_are_up_to_date():
    assert awx.TEMPLATES_FILE.read_text(encoding="utf-8") == awx.templates_text(), "run `ipm-awx templates`"
    assert awx.EE_REQUIREMENTS.read_text(encoding="utf-8") == awx.requirements_text(), "run `ipm-awx requirements`"


def test_every_survey_passes_awxs_rules():
    for template in templates():
        assert awx.survey_problems(template["survey_spec"], template["name"]) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s["spec"].append(dict(s["spec"][0])), "duplicated"),
        (lambda s: s["spec"][0].update(type="choice"), "'type' 'choice' is not one of"),
        (lambda s: s["spec"][0].pop("required"), "'required' missing"),
        (lambda s: s["spec"][0].pop("variable"), "'variable' missing"),
        (lambda s: s.pop("description"), "'description' is missing"),
        (lambda s: s.update(spec=[]), "doesn't contain any items"),
        (lambda s: s["spec"][0].update(type="multiplechoice", choices=["a", "b"], default="c"), "not a valid choice"),
        (lambda s: s["spec"][0].update(type="multiplechoice", choices=[]), "'choices' must be a non-empty list"),
        (lambda s: s["spec"][0].update(type="integer", default="ten"), "must be a integer"),
        (lambda s: s["spec"][0].update(type="text", default=5), "must be a string"),
        (lambda s: s["spec"][0].update(type="text", min=0, max=2, default="abcd"), "not between min 0 and max 2"),
    ],
)
def test_survey_rules_find_each_mistake(change, expected):
    import copy

    survey = copy.deepcopy(templates()[0]["survey_spec"])
    change(survey)
    problems = awx.survey_problems(survey, "t")
    assert any(expected in p for p in problems), problems


def test_ee_requirements_are_the_pyproject_pins_the_plugins_import():
    runtime = awx.runtime_requirements()
    lines = [line for line in awx.EE_REQUIREMENTS.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    assert lines and all(line in runtime.values() for line in lines)
    imported = awx.plugin_imports()
    assert {"yaml", "holidays", "netaddr"} <= imported  # PyYAML, holidays and netaddr are the plugins'
    assert not any(line.startswith(("ansible-core", "ansible-runner", "matplotlib", "fpdf2")) for line in lines)


def test_a_bad_questions_file_is_one_clear_line(tmp_path):
    bad = tmp_path / "survey_questions.yml"
    bad.write_text("questions:\n  change_id:\n    question_name: x\n    regex: '^CHG'\n", encoding="utf-8")
    with pytest.raises(awx.AwxError, match=r"questions\.change_id: unknown key\(s\) regex"):
        awx.load_questions(bad)


def test_awx_configuration_loads_with_the_names_configure_yml_uses():
    objects = yaml.load((awx.AWX_DIR / "objects.yml").read_text(encoding="utf-8"), Loader=_UnsafeLoader)
    types = {t["name"]: t for t in objects["ipm_awx_credential_types"]}
    key = types["ipm.fleet audit key"]
    assert key["injectors"]["env"]["IPM_AUDIT_KEY_FILE"] == "{{ tower.filename.audit_key }}"
    assert set(key["injectors"]["file"]) == {"template.audit_key"}
    ship = types["ipm.fleet audit shipping"]["injectors"]["env"]
    assert set(ship) == {"IPM_AUDIT_SHIP_DIR", "IPM_AUDIT_SEGMENT_DIR"}
    # the callback reads exactly these environment variables
    callback = (PROJECT_ROOT / "plugins" / "callback" / "audit.py").read_text(encoding="utf-8")
    for name in ("IPM_AUDIT_KEY_FILE", "IPM_AUDIT_SHIP_DIR", "IPM_AUDIT_SEGMENT_DIR", "IPM_AUDIT_CREATE_KEY"):
        assert f"name: {name}" in callback
    for credential_type in types.values():
        fields = {f["id"] for f in credential_type["inputs"]["fields"]}
        assert set(credential_type["inputs"].get("required", [])) <= fields
        used = set(re.findall(r"{{\s*(?:tower\.filename\.)?(\w+)\s*}}", yaml.safe_dump(credential_type["injectors"])))
        assert used <= fields | {"tower"}
    inventory_file = PROJECT_ROOT / objects["ipm_awx_inventory_file"]
    assert yaml.safe_load(inventory_file.read_text(encoding="utf-8"))["plugin"] == "ipm.fleet.registry"
    requirements = yaml.safe_load((PROJECT_ROOT / "collections" / "requirements.yml").read_text(encoding="utf-8"))
    assert requirements == {"collections": [{"name": ".", "type": "dir"}]}


class _UnsafeLoader(yaml.SafeLoader):
    """Reads Ansible's !unsafe tag as a plain string (AWX's own templates in the injectors)."""


_UnsafeLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


@pytest.mark.parametrize("command", [[], ["requirements"], ["ee"], ["templates"], ["check"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        awx.main([*command, "--help"])
    assert exit_.value.code == 0 and "usage: ipm-awx" in capsys.readouterr().out


def test_check_passes_on_the_repository(capsys):
    assert awx.main(["check"]) == 0
    assert "15 job templates up to date, every survey valid" in capsys.readouterr().out
