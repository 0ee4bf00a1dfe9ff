"""hardware_swap and `ipm-registry swap`: the serial number changes in place, the swap is recorded, bad swaps refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ansible_collections.ipm.fleet.plugins.plugin_utils import hardware_swap as hs
from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ipm_tools import registry as cli

PROJECT_ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture
def registry(tmp_path) -> Path:
    target = tmp_path / "registry"
    shutil.copytree(PROJECT_ROOT / "registry" / "demo", target)
    catalog = target / "catalog.yml"
    catalog.write_text(catalog.read_text().replace("../../app/releases", str(PROJECT_ROOT / "app" / "releases")))
    return target


def test_swap_edits_the_line_in_place_and_records_it(registry):
    path = registry / "customers" / "parkcite.yml"
    before = path.read_text()
    record = hs.swap(str(registry), "fr-lpd-001", "PS3-26-001204", "INC-4711", "alice", backup="/store/x")
    after = path.read_text()
    assert after == before.replace("serial_number: PS3-23-000877", "serial_number: PS3-26-001204", 1)
    assert record["old_serial_number"] == "PS3-23-000877" and record["site"] == "lyon-part-dieu"
    assert (
        record["customer"] == "parkcite" and record["model"] == "PS-300" and record["file"] == "customers/parkcite.yml"
    )
    fleet, problems = reg.load_fleet(str(registry), 1)
    assert problems == []
    assert {t["id"]: t["serial_number"] for _c, _s, t in fleet.terminals()}["fr-lpd-001"] == "PS3-26-001204"
    assert hs.swaps(str(registry), "fr-lpd-001") == [record]
    assert json.loads((registry / hs.SWAPS_FILE).read_text()) == record


@pytest.mark.parametrize(
    ("terminal", "serial", "ticket", "words"),
    [
        ("fr-lpd-001", "PS3-23-000877", "INC-1", "already has serial number"),
        ("fr-lpd-001", "bad serial", "INC-1", "expected letters, digits"),
        ("fr-lpd-001", "PS3-26-1", "", "needs its ticket"),
        ("fr-nowhere-9", "PS3-26-1", "INC-1", "no terminal fr-nowhere-9"),
    ],
)
def test_bad_swaps_are_refused_and_change_nothing(registry, terminal, serial, ticket, words):
    snapshot = {p: p.read_bytes() for p in registry.rglob("*.yml")}
    with pytest.raises(hs.SwapError, match=words):
        hs.swap(str(registry), terminal, serial, ticket, "alice")
    assert {p: p.read_bytes() for p in registry.rglob("*.yml")} == snapshot
    assert not (registry / hs.SWAPS_FILE).exists()


def test_another_terminals_serial_number_is_refused(registry):
    document = yaml.safe_load((registry / "customers" / "parkcite.yml").read_text())
    other = document["sites"][0]["terminals"][1]["serial_number"]
    with pytest.raises(hs.SwapError, match="belongs to terminal"):
        hs.swap(str(registry), document["sites"][0]["terminals"][0]["id"], other, "INC-1", "alice")


def test_a_damaged_swaps_file_is_named(registry):
    (registry / hs.SWAPS_FILE).write_text("not json\n")
    with pytest.raises(hs.SwapError, match="line 1 is not a JSON record"):
        hs.swaps(str(registry))


def test_ipm_registry_swap(registry, capsys):
    code = cli.main(["swap", "fr-lpd-001", "--serial", "PS3-26-9", "--ticket", "INC-2", "-r", str(registry)])
    assert code == 0 and "PS3-23-000877 -> PS3-26-9" in capsys.readouterr().out
    code = cli.main(["swap", "fr-lpd-001", "--serial", "PS3-26-9", "--ticket", "INC-2", "-r", str(registry)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("ipm-registry: error: ") and "Traceback" not in err
