"""The job slicing plan (plugins/plugin_utils/slicing.py): whole sites, rings in order, balance, empty slices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.ipm.fleet.plugins.filter.slicing import slice_plan as slice_plan_filter
from ansible_collections.ipm.fleet.plugins.plugin_utils import slicing
from ansible_collections.ipm.fleet.plugins.plugin_utils.slicing import RINGS, SlicingError, slice_plan

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@st.composite
def fleets(draw, max_sites=20, max_per_site=15):
    """A fleet: sites of 1..max_per_site terminals, each terminal a ring; terminal ids unique."""
    sizes = draw(st.lists(st.integers(1, max_per_site), min_size=1, max_size=max_sites))
    terminals = []
    for site_index, size in enumerate(sizes):
        customer = "c%d" % (site_index % 3)
        rings = draw(st.lists(st.sampled_from(RINGS), min_size=size, max_size=size))
        for n in range(size):
            ring = rings[n]
            terminals.append(
                {
                    "ipm_terminal_id": "t-%03d-%03d" % (site_index, n),
                    "ipm_site_id": "site-%03d" % site_index,
                    "ipm_ring": ring,
                    "ipm_customer_id": customer,
                }
            )
    return terminals


SLICES = st.integers(1, 12)


def _site_of(terminals):
    return {t["ipm_terminal_id"]: t["ipm_site_id"] for t in terminals}


@settings(max_examples=150, deadline=None)
@given(fleets(), SLICES)
def test_sites_never_split_and_every_terminal_in_exactly_one_slice(terminals, n):
    plan = slice_plan(terminals, n)
    site_of = _site_of(terminals)
    where: dict = {}
    for entry in plan["slice_list"]:
        for host in entry["hosts"]:
            assert host not in where, "terminal in two slices"
            where[host] = entry["slice"]
    assert set(where) == set(site_of)
    slices_of_site: dict = {}
    for host, k in where.items():
        slices_of_site.setdefault(site_of[host], set()).add(k)
    assert all(len(ks) == 1 for ks in slices_of_site.values())
    assert {site: next(iter(ks)) for site, ks in slices_of_site.items()} == plan["assignment"]
    assert sum(e["terminals"] for e in plan["slice_list"]) == len(terminals)


@settings(max_examples=150, deadline=None)
@given(fleets(), SLICES)
def test_stages_are_the_rings_in_order_and_cover_each_ring_once(terminals, n):
    plan = slice_plan(terminals, n)
    assert [stage["ring"] for stage in plan["stages"]] == list(RINGS)
    for stage in plan["stages"]:
        ring = stage["ring"]
        expected = {t["ipm_terminal_id"] for t in terminals if t["ipm_ring"] == ring}
        planned = [h for job in stage["jobs"] for h in job["hosts"]]
        assert sorted(planned) == sorted(expected)
        for job in stage["jobs"]:
            assert job["limit"] == "slice_%d_of_%d:&ring_%s" % (job["slice"], n, ring)
            assert set(job["hosts"]) <= set(plan["slice_list"][job["slice"] - 1]["hosts"])
        assert sorted([j["slice"] for j in stage["jobs"]] + stage["empty"]) == list(range(1, n + 1))


@settings(max_examples=150, deadline=None)
@given(fleets(), SLICES)
def test_balance_bound_spread_at_most_the_largest_site(terminals, n):
    plan = slice_plan(terminals, n)
    loads = [e["terminals"] for e in plan["slice_list"]]
    largest = plan["largest_site"]
    assert max(loads) - min(loads) <= largest
    assert plan["spread"] == max(loads) - min(loads)
    # Greedy into the least loaded slice: the largest slice is at most the fair share plus (1 - 1/n) largest site.
    assert max(loads) <= len(terminals) / n + largest * (1 - 1 / n) + 1e-9


@settings(max_examples=100, deadline=None)
@given(fleets(), SLICES, st.randoms(use_true_random=False))
def test_deterministic_whatever_the_input_order(terminals, n, rnd):
    shuffled = list(terminals)
    rnd.shuffle(shuffled)
    assert slice_plan(shuffled, n) == slice_plan(terminals, n)
    as_mapping = {t["ipm_terminal_id"]: t for t in shuffled}
    assert slice_plan(as_mapping, n)["assignment"] == slice_plan(terminals, n)["assignment"]


@settings(max_examples=100, deadline=None)
@given(fleets(max_sites=8), st.integers(1, 20), st.data())
def test_a_limit_keeps_the_slices_and_reports_the_ones_it_empties(terminals, n, data):
    names = sorted(_site_of(terminals))
    limit = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    plan = slice_plan(terminals, n, limit=limit)
    assert plan["assignment"] == slice_plan(terminals, n)["assignment"]
    wanted = set(limit)
    for entry in plan["slice_list"]:
        assert entry["limited"] == len(wanted & set(entry["hosts"]))
    expected_empty = [e["slice"] for e in plan["slice_list"] if e["terminals"] and not e["limited"]]
    assert plan["limit_empty"] == expected_empty
    assert bool(expected_empty) == any("the limit leaves" in m for m in plan["messages"])
    planned = {h for stage in plan["stages"] for job in stage["jobs"] for h in job["hosts"]}
    assert planned == wanted
    if plan["sites"] < n:
        assert len(plan["empty"]) == n - plan["sites"]
        assert any("cannot fill %d slices" % n in m for m in plan["messages"])


def _fleet(*sizes, ring="broad"):
    return [
        {"terminal": "t%d-%d" % (i, k), "site": "s%d" % i, "ring": ring, "customer": "c"}
        for i, size in enumerate(sizes)
        for k in range(size)
    ]


def test_more_slices_than_sites_leaves_empty_slices_with_a_message():
    plan = slice_plan(_fleet(3, 2), 4)
    assert plan["empty"] == [3, 4]
    assert [e["terminals"] for e in plan["slice_list"]] == [3, 2, 0, 0]
    assert plan["messages"][0] == (
        "2 slice(s) get no terminal (slice_3_of_4, slice_4_of_4): 2 site(s) cannot fill 4 slices, "
        "a site is never split; use 2 slices or fewer"
    )
    broad = plan["stages"][2]
    assert [job["limit"] for job in broad["jobs"]] == ["slice_1_of_4:&ring_broad", "slice_2_of_4:&ring_broad"]
    assert plan["stages"][0]["jobs"] == [] and plan["stages"][0]["empty"] == [1, 2, 3, 4]


def test_a_site_bigger_than_a_fair_share_stays_whole_and_is_named():
    plan = slice_plan(_fleet(100, 10, 10, 10, 10), 2)
    assert plan["assignment"]["s0"] == 1
    assert [e["terminals"] for e in plan["slice_list"]] == [100, 40]
    assert plan["oversized"] == ["s0"]
    assert any(m.startswith("1 site(s) have more terminals than a fair share (70.0") for m in plan["messages"])


def test_largest_first_packing_is_the_expected_one():
    # sizes 7 6 5 4 3 into 2: 7->1, 6->2, 5->2 (6<7), 4->1 (7<11), 3->1 (11=11, lowest number) => 14 / 11
    plan = slice_plan(_fleet(7, 6, 5, 4, 3), 2)
    assert plan["assignment"] == {"s0": 1, "s1": 2, "s2": 2, "s3": 1, "s4": 1}
    assert [e["terminals"] for e in plan["slice_list"]] == [14, 11]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", None, True, [2]])
def test_bad_number_of_slices_is_one_clear_error(bad):
    with pytest.raises(SlicingError, match=r"^slices: expected a whole number of 1 or more, found "):
        slice_plan(_fleet(2), bad)


def test_string_digits_are_a_number_of_slices():
    assert slice_plan(_fleet(2, 2), "2")["slices"] == 2


@pytest.mark.parametrize(
    ("terminals", "message"),
    [
        ([{"terminal": "a", "ring": "broad"}], "terminal a: no ipm_site_id (or site)"),
        ([{"site": "s"}], "terminal #1: no ipm_terminal_id"),
        ([{"terminal": "a", "site": "s", "ring": "gold"}], "terminal a: ring must be one of canary, pilot, broad"),
        ([{"terminal": "a", "site": "s"}, {"terminal": "a", "site": "t"}], "terminal a: listed twice"),
        (
            [{"terminal": "a", "site": "s", "customer": "x"}, {"terminal": "b", "site": "s", "customer": "y"}],
            "site s: its terminals name two customers",
        ),
        ("t1,t2", "terminals: expected a list of terminals"),
        (["t1"], "terminal #1: expected a dict of host variables"),
    ],
)
def test_bad_terminals_are_one_clear_error(terminals, message):
    with pytest.raises(SlicingError) as caught:
        slice_plan(terminals, 2)
    assert str(caught.value).startswith(message)


def test_unknown_terminals_in_the_limit_and_bad_ring():
    with pytest.raises(SlicingError, match=r"^limit: 1 terminal\(s\) not in the fleet: nope"):
        slice_plan(_fleet(2), 1, limit=["nope"])
    with pytest.raises(SlicingError, match=r"^ring must be one of"):
        slice_plan(_fleet(2), 1, ring="gold")
    plan = slice_plan(_fleet(2), 1, ring="broad", limit="t0-0:t0-1")
    assert [s["ring"] for s in plan["stages"]] == ["broad"]
    assert plan["stages"][0]["jobs"][0]["hosts"] == ["t0-0", "t0-1"]


def test_the_default_ring_is_broad():
    plan = slice_plan([{"terminal": "a", "site": "s"}], 1)
    assert plan["slice_list"][0]["by_ring"] == {"canary": 0, "pilot": 0, "broad": 1}


def test_inventory_slice_groups_match_the_plan():
    terminals = _fleet(5, 4, 3, 2, 1)
    hosts = [
        [t["terminal"], {"ipm_site_id": t["site"], "ipm_ring": t["ring"]}, ["site_" + t["site"], "ring_broad"]]
        for t in terminals
    ]
    groups, children, messages = slicing.inventory_slice_groups(hosts, 2)
    assert groups == {
        "slice_1_of_2": {"ipm_slice": 1, "ipm_slice_count": 2},
        "slice_2_of_2": {"ipm_slice": 2, "ipm_slice_count": 2},
    }
    plan = slice_plan(terminals, 2)
    assert sorted(children) == sorted(["slice_%d_of_2" % k, "site_" + s] for s, k in plan["assignment"].items())
    assert messages == []
    _, _, messages = slicing.inventory_slice_groups(hosts, 7)
    assert messages and "2 slice(s) get no terminal (slice_6_of_7, slice_7_of_7)" in messages[0]
    with pytest.raises(SlicingError, match=r"^option slices: expected"):
        slicing.inventory_slice_groups(hosts, 0)


def test_the_filter_turns_errors_into_filter_errors():
    from ansible.errors import AnsibleFilterError

    assert slice_plan_filter(_fleet(1, 1), 2)["empty"] == []
    with pytest.raises(AnsibleFilterError, match=r"^ipm.fleet.slice_plan: slices: expected a whole number"):
        slice_plan_filter(_fleet(1), 0)


def _registry_cli(*args):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"))
    return subprocess.run(
        [str(BIN / "ipm-registry"), *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )


def test_ipm_registry_slices_on_the_demo_registry():
    result = _registry_cli("slices", "registry/demo", "--slices", "3", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["slices"] == 3 and plan["sites"] == 8
    assert sum(e["terminals"] for e in plan["slice_list"]) == plan["terminals"]
    text = _registry_cli("slices", "registry/demo", "--slices", "12", "--ring", "canary")
    assert text.returncode == 0, text.stderr
    assert "  canary: slice_1_of_12:&ring_canary" in text.stdout
    assert "note: 4 slice(s) get no terminal" in text.stdout
    bad = _registry_cli("slices", "registry/demo", "--slices", "0")
    assert bad.returncode == 2 and "expected a number of slices, 1 or more; found '0'" in bad.stderr
    unknown = _registry_cli("slices", "registry/demo", "--slices", "2", "--limit", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "ipm-registry: error: limit: 1 terminal(s) not in the fleet: nope"
    assert "Traceback" not in bad.stderr + unknown.stderr
