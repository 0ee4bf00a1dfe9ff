"""The VPN address plan (plugins/plugin_utils/vpn_plan.py): stable addresses, holds, and every bad input."""

from __future__ import annotations

import datetime
import random
import sys
from pathlib import Path

import netaddr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ansible_collections.ipm.fleet.plugins.plugin_utils import vpn_plan as vp
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_check import reporter

sys.path.insert(0, str(Path(__file__).parents[1]))  # --import-mode=importlib: helpers in tests/unit
import vpn_fixtures as vf

T0 = datetime.datetime(2026, 1, 5, 9, 0, tzinfo=datetime.UTC)
SITES = [
    ("c1", "s1", "10.60.1.0/26"),
    ("c1", "s2", "10.60.2.0/26"),
    ("c2", "s3", "10.61.1.0/26"),
]


def make_settings(**overrides):
    section = dict(vf.VPN, **overrides)
    problems = []
    result = vp.check_settings(section, reporter("catalog.yml", problems))
    assert problems == []
    return result


def make_view(terminals, sites=SITES, customer_prefixes=None):
    """A View of customers c1 (declared 10.60.0.0/20) and c2 (no prefix), SITES, and ``terminals``.

    ``terminals``: list of (id, site, maintained).
    """
    customer_prefixes = {"c1": "10.60.0.0/20", "c2": None} if customer_prefixes is None else customer_prefixes
    customers = [
        {"id": cid, "prefix": prefix, "file": f"{cid}.yml", "keys": ("customer", "vpn_prefix")}
        for cid, prefix in customer_prefixes.items()
    ]
    site_items = [
        {
            "id": sid,
            "customer": cid,
            "prefix": prefix,
            "file": f"{cid}.yml",
            "keys": ("sites", index, "network", "vpn_subnet"),
            "site_keys": ("sites", index),
        }
        for index, (cid, sid, prefix) in enumerate(sites)
    ]
    customer_of = {sid: cid for cid, sid, _ in sites}
    terminal_items = [
        {
            "id": tid,
            "site": sid,
            "customer": customer_of[sid],
            "maintained": maintained,
            "file": f"{customer_of[sid]}.yml",
            "keys": ("sites", 0, "terminals", index, "id"),
        }
        for index, (tid, sid, maintained) in enumerate(terminals)
    ]
    return vp.View(customers, site_items, terminal_items)


def in_prefix(address, prefix):
    return netaddr.IPAddress(address) in netaddr.IPNetwork(prefix)


# --- stability, holds, no duplicates (random histories) ------------------------------------------------

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, len(SITES) - 1)),
        st.tuples(st.just("retire"), st.integers(0, 999)),
        st.tuples(st.just("remove"), st.integers(0, 999)),
        st.tuples(st.just("move"), st.integers(0, 999), st.integers(0, len(SITES) - 1)),
        st.tuples(st.just("return"), st.integers(0, 999)),
        st.tuples(st.just("wait"), st.integers(1, 120)),
    ),
    max_size=45,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPERATIONS, st.integers(0, 2**32 - 1))
def test_random_histories_keep_addresses_and_holds(operations, seed):
    shuffle = random.Random(seed)
    config = make_settings()
    site_prefix = {sid: prefix for _, sid, prefix in SITES}
    terminals: dict[str, dict] = {}  # id -> {"site", "maintained"}
    order: list[str] = []  # registry order, shuffled now and then: the plan must not care
    plan = vp.empty_plan()
    now = T0
    released_at: dict[str, tuple] = {}  # address -> (terminal that had it, when its hold started)
    counter = 0
    for operation in [("add", 0), *operations]:
        kind = operation[0]
        maintained_ids = [t for t in order if terminals[t]["maintained"]]
        retired_ids = [t for t in order if not terminals[t]["maintained"]]
        if kind == "add":
            counter += 1
            tid = f"t-{counter:03d}"
            terminals[tid] = {"site": SITES[operation[1]][1], "maintained": True}
            order.insert(shuffle.randrange(len(order) + 1), tid)
        elif kind in ("retire", "remove", "move") and maintained_ids:
            tid = maintained_ids[operation[1] % len(maintained_ids)]
            if kind == "retire":
                terminals[tid]["maintained"] = False
            elif kind == "remove":
                del terminals[tid]
                order.remove(tid)
            else:
                terminals[tid]["site"] = SITES[operation[2]][1]
        elif kind == "return" and retired_ids:
            terminals[retired_ids[operation[1] % len(retired_ids)]]["maintained"] = True
        elif kind == "wait":
            now += datetime.timedelta(days=operation[1])
        if shuffle.random() < 0.3:
            shuffle.shuffle(order)
        view = make_view([(t, terminals[t]["site"], terminals[t]["maintained"]) for t in order])
        before = plan
        plan, _changes, problems = vp.assign(config, view, before, now)
        assert problems == [], [str(p) for p in problems]

        held_now = {}
        for entry in plan["retired"]:
            until = vp.parse_stamp(entry["retired_at"]) + datetime.timedelta(days=config.address_hold_days)
            assert now < until  # ended holds are released
            held_now[entry["address"]] = entry
        addresses = [entry["address"] for entry in plan["terminals"].values()]
        assert len(addresses) == len(set(addresses)), "an address given twice"
        assert not set(addresses) & set(held_now), "a held address given to a terminal"

        for tid, entry in before["terminals"].items():
            if (
                tid in terminals
                and terminals[tid]["maintained"]
                and in_prefix(entry["address"], site_prefix[terminals[tid]["site"]])
            ):
                assert plan["terminals"][tid]["address"] == entry["address"], f"{tid} changed address"
            else:  # retired, removed, moved: the address is held from now on
                assert tid not in plan["terminals"] or plan["terminals"][tid]["address"] != entry["address"]
                assert entry["address"] in held_now and held_now[entry["address"]]["retired_at"] == vp.stamp(now)
                released_at[entry["address"]] = (tid, now)
        for tid, item in terminals.items():
            if not item["maintained"]:
                assert tid not in plan["terminals"]
                continue
            address = plan["terminals"][tid]["address"]
            network = netaddr.IPNetwork(site_prefix[item["site"]])
            assert netaddr.IPAddress(address) in network
            assert int(netaddr.IPAddress(address)) not in (network.first, network.first + 1, network.last)
            if tid not in before["terminals"] and address in released_at:  # given again: only after its hold
                owner, since = released_at[address]
                if owner != tid:
                    assert now >= since + datetime.timedelta(days=config.address_hold_days), (address, owner, tid)

        layout = vp.evaluate(config, view, plan, now=now)
        assert layout.problems == [] and layout.stale_problems == []
        assert layout.complete
        again, more, _ = vp.assign(config, view, plan, now)
        assert more == [] and again == plan  # a second run changes nothing


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_the_order_of_the_terminals_decides_nothing_once_assigned(count, seed):
    config = make_settings()
    terminals = [(f"t-{i:03d}", SITES[i % 3][1], True) for i in range(count)]
    plan = vp.assign(config, make_view(terminals), vp.empty_plan(), T0)[0]
    random.Random(seed).shuffle(terminals)
    new, changes, problems = vp.assign(config, make_view(terminals), plan, T0 + datetime.timedelta(days=1))
    assert problems == [] and changes == [] and new == plan
    layout = vp.evaluate(config, make_view(terminals), plan, now=T0)
    assert {t: item["address"] for t, item in layout.terminals.items()} == {
        t: entry["address"] for t, entry in plan["terminals"].items()
    }


def test_a_moved_terminal_gets_an_address_in_its_new_site_and_its_old_one_is_held():
    config = make_settings()
    plan = vp.assign(config, make_view([("t-1", "s1", True), ("t-2", "s1", True)]), vp.empty_plan(), T0)[0]
    assert plan["terminals"]["t-1"]["address"] == "10.60.1.2"  # network and first host reserved
    moved = make_view([("t-1", "s3", True), ("t-2", "s1", True)])
    layout = vp.evaluate(config, moved, plan, now=T0)
    (stale,) = layout.stale_problems
    assert "terminal moved from site s1 to s3" in str(stale) and "ipm-registry addresses --assign" in str(stale)
    assert stale.keys == ("terminals", "t-1", "address")
    new, _changes, problems = vp.assign(config, moved, plan, T0)
    assert problems == []
    assert new["terminals"]["t-1"]["address"] == "10.61.1.2" and new["terminals"]["t-2"]["address"] == "10.60.1.3"
    assert {"terminal": "t-1", "address": "10.60.1.2"}.items() <= new["retired"][0].items()
    assert new["customers"]["c2"]["prefix"] == "10.61.0.0/20"  # the /20 holding its site
    # A newcomer to s1 skips the held address; after the hold it is free again.
    view = make_view([("t-1", "s3", True), ("t-2", "s1", True), ("t-3", "s1", True)])
    assert vp.assign(config, view, new, T0)[0]["terminals"]["t-3"]["address"] == "10.60.1.4"
    later = vp.assign(config, view, new, T0 + datetime.timedelta(days=90))[0]
    assert later["terminals"]["t-3"]["address"] == "10.60.1.2" and later["retired"] == []


def test_a_terminal_back_within_its_hold_gets_its_own_address_again():
    config = make_settings()
    plan = vp.assign(config, make_view([("t-1", "s1", True), ("t-2", "s1", True)]), vp.empty_plan(), T0)[0]
    retired = vp.assign(config, make_view([("t-1", "s1", False), ("t-2", "s1", True)]), plan, T0)[0]
    assert "t-1" not in retired["terminals"] and retired["retired"][0]["address"] == "10.60.1.2"
    back = vp.assign(config, make_view([("t-1", "s1", True), ("t-2", "s1", True)]), retired, T0)[0]
    assert back["terminals"]["t-1"]["address"] == "10.60.1.2" and back["retired"] == []


def test_sites_without_a_subnet_get_a_prefix_of_the_configured_length():
    config = make_settings(site_prefix_length=27)
    sites = [("c1", "s1", None), ("c1", "s2", "10.60.0.0/27"), ("c2", "s3", None)]
    view = make_view([("t-1", "s1", True), ("t-2", "s3", True)], sites=sites)
    new, changes, problems = vp.assign(config, view, vp.empty_plan(), T0)
    assert problems == []
    assert new["sites"]["s1"]["prefix"] == "10.60.0.32/27"  # the lowest free /27 of c1's prefix
    assert new["customers"]["c2"]["prefix"] == "10.60.16.0/20"  # the lowest free /20 of the supernet
    assert new["sites"]["s3"]["prefix"] == "10.60.16.0/27"
    assert new["terminals"]["t-2"]["address"] == "10.60.16.2"
    assert {c["action"] for c in changes} == {"site_prefix", "customer_prefix", "assigned"}


# --- every bad input: one problem naming the file and key path ---------------------------------------


def problems_of(tmp_path, catalog=None, customers=None, plan=None):
    config = vf.vpn_registry(tmp_path, catalog, customers, plan)
    return [str(problem) for problem in reg.load_fleet(str(config.parent / "registry"))[1]]


def test_the_base_vpn_registry_is_valid(tmp_path):
    assert problems_of(tmp_path) == []


@pytest.mark.parametrize(
    ("change", "where", "words"),
    [
        (
            lambda cat, cus: (
                cus["bravo.yml"]["customer"].__setitem__("vpn_prefix", "10.60.8.0/21"),
                cus["bravo.yml"]["sites"][0]["network"].__setitem__("vpn_subnet", "10.60.9.0/28"),
            ),
            "bravo.yml:",
            "customer.vpn_prefix: customer prefix overlaps customer alpha's 10.60.0.0/20",
        ),
        (
            lambda cat, cus: cus["alpha.yml"]["sites"][0]["network"].__setitem__("vpn_subnet", "10.60.16.0/28"),
            "alpha.yml:",
            "sites[0].network.vpn_subnet: site prefix outside its customer alpha's prefix 10.60.0.0/20",
        ),
        (
            lambda cat, cus: cus["bravo.yml"]["sites"][0]["network"].__setitem__("vpn_subnet", "10.70.1.0/28"),
            "bravo.yml:",
            "sites[0].network.vpn_subnet: site prefix outside the fleet supernet 10.60.0.0/14",
        ),
        (
            lambda cat, cus: cus["alpha.yml"]["customer"].__setitem__("vpn_prefix", "10.80.0.0/20"),
            "alpha.yml:",
            "customer.vpn_prefix: customer prefix outside the fleet supernet 10.60.0.0/14",
        ),
        (
            lambda cat, cus: cus["alpha.yml"]["customer"].__setitem__("vpn_prefix", "10.60.0.1/20"),
            "alpha.yml:",
            "customer.vpn_prefix: host bits set (the network is 10.60.0.0/20)",
        ),
        (
            lambda cat, cus: (
                cus["alpha.yml"]["sites"][0]["network"].__setitem__("vpn_subnet", "10.60.1.0/30"),
                cus["alpha.yml"]["sites"][0]["terminals"][1].pop("status"),  # a-002 maintained again
            ),
            "alpha.yml:",
            "sites[0].network.vpn_subnet: site prefix 10.60.1.0/30 full: 2 maintained terminals, room for 1",
        ),
        (
            lambda cat, cus: cat["vpn"].update(support_prefix="10.61.200.0/24", hub_address="10.61.200.1"),
            "catalog.yml:",
            "vpn.support_prefix: the support prefix overlaps the fleet supernet 10.60.0.0/14",
        ),
        (
            lambda cat, cus: cat["vpn"].__setitem__("hub_address", "10.58.0.1"),
            "catalog.yml:",
            "vpn.hub_address: the hub address is not a host address of the support prefix 10.59.0.0/24",
        ),
        (
            lambda cat, cus: cat["vpn"].__setitem__("supernet", "10.60.0/14"),
            "catalog.yml:",
            "vpn.supernet: not a CIDR network",
        ),
        (
            lambda cat, cus: cat["vpn"].__setitem__("site_prefix_length", 18),
            "catalog.yml:",
            "vpn.site_prefix_length: site prefixes must be smaller than customer prefixes",
        ),
        (
            lambda cat, cus: cat["vpn"].pop("supernet"),
            "catalog.yml:",
            "vpn.supernet: missing required key",
        ),
        (
            lambda cat, cus: cus["alpha.yml"]["customer"].__setitem__("vpn_prefx", "10.60.0.0/20"),
            "alpha.yml:",
            "customer.vpn_prefx: unknown key (did you mean 'vpn_prefix'?)",
        ),
    ],
)
def test_bad_prefixes_are_named_with_file_and_key(tmp_path, change, where, words):
    catalog, customers = vf.vpn_base()
    change(catalog, customers)
    problems = problems_of(tmp_path, catalog, customers)
    assert len(problems) == 1, problems
    assert where in problems[0] and words in problems[0], problems[0]
    assert problems[0].split(":")[1].isdigit()  # with its line


def test_two_sites_overlapping(tmp_path):
    catalog, customers = vf.vpn_base()
    second = dict(customers["alpha.yml"]["sites"][0], id="alpha-lyon", terminals=[])
    second["network"] = {"vpn_subnet": "10.60.1.8/29"}
    customers["alpha.yml"]["sites"].append(second)
    (problem,) = problems_of(tmp_path, catalog, customers)
    assert (
        "alpha.yml:" in problem
        and "sites[1].network.vpn_subnet: site prefix overlaps site alpha-paris's 10.60.1.0/28" in problem
    )


def assigned_plan(**terminals):
    plan = {"version": 1, "customers": {"bravo": {"prefix": "10.61.0.0/20"}}, "terminals": {}}
    sites = {"a": ("alpha-paris", "alpha"), "b": ("bravo-sydney", "bravo")}
    for terminal, address in terminals.items():
        site, customer = sites[terminal[0]]
        plan["terminals"][terminal.replace("_", "-")] = {"address": address, "site": site, "customer": customer}
    return plan


def test_a_duplicate_address_in_the_plan_file(tmp_path):
    plan = assigned_plan(a_001="10.60.1.2", b_001="10.61.1.2", b_002="10.61.1.2")
    (problem,) = problems_of(tmp_path, plan=plan)
    assert (
        "vpn-plan.yml:" in problem
        and "terminals.b-002.address: duplicate address: 10.61.1.2 is already b-001's" in problem
    )


def test_a_held_address_given_again_is_a_duplicate(tmp_path):
    recently = vf_stamp(datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3))
    plan = assigned_plan(a_001="10.60.1.2", b_001="10.61.1.2", b_002="10.61.1.3")
    plan["retired"] = [{"terminal": "b-009", "address": "10.61.1.3", "retired_at": recently}]
    (problem,) = problems_of(tmp_path, plan=plan)
    assert "vpn-plan.yml:" in problem and "retired[0].address: duplicate address: 10.61.1.3, held until" in problem
    long_ago = vf_stamp(datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=91))
    plan["retired"][0]["retired_at"] = long_ago
    assert problems_of(tmp_path, plan=plan) == []  # the hold is over: the address may be given again


def vf_stamp(moment):
    return vp.stamp(moment.replace(microsecond=0))


def test_a_plan_address_outside_its_site_prefix(tmp_path):
    plan = assigned_plan(a_001="10.60.2.7", b_001="10.61.1.2", b_002="10.61.1.3")
    (problem,) = problems_of(tmp_path, plan=plan)
    assert (
        "vpn-plan.yml:" in problem
        and "terminals.a-001.address: address outside its site alpha-paris's prefix 10.60.1.0/28" in problem
    )
    assert "ipm-registry addresses --assign" in problem


def test_a_reserved_address_and_a_malformed_plan(tmp_path):
    plan = assigned_plan(a_001="10.60.1.1", b_001="10.61.1.2", b_002="10.61.1.3")
    (problem,) = problems_of(tmp_path, plan=plan)
    assert "terminals.a-001.address: reserved address" in problem
    typo, missing = problems_of(tmp_path, plan="terminals:\n  a-001: {adress: 10.60.1.2}\n")
    assert "vpn-plan.yml:2: terminals.a-001.adress: unknown key (did you mean 'address'?)" in typo
    assert "vpn-plan.yml:2: terminals.a-001.address: missing required key" in missing
    (problem,) = problems_of(tmp_path, plan="terminals: [\n")
    assert "vpn-plan.yml:" in problem and "YAML syntax error" in problem
    (problem,) = problems_of(tmp_path, plan=assigned_plan(a_001="10.60.1.300"))
    assert "terminals.a-001.address: not an IPv4 address" in problem


def test_no_vpn_section_no_plan_checks(tmp_path):
    catalog, customers = vf.vpn_base()
    del catalog["vpn"]
    config = vf.vpn_registry(tmp_path, catalog, customers, plan="garbage: [")
    fleet, problems = reg.load_fleet(str(config))
    assert problems == [] and fleet.vpn is None


def test_the_plan_file_is_not_a_customer_file_and_the_demo_is_complete():
    root = Path(__file__).resolve().parents[3]
    fleet, problems = reg.load_fleet(str(root / "registry" / "demo"))
    assert problems == []
    assert fleet.vpn is not None and fleet.vpn.complete
    addresses = [item["address"] for item in fleet.vpn.terminals.values() if item["state"] == "assigned"]
    assert len(addresses) == len(set(addresses)) == 17


# --- the forwarding policy ---------------------------------------------------------------------------


def test_isolation_rules_support_reaches_all_customers_reach_nothing_across():
    root = Path(__file__).resolve().parents[3]
    fleet = reg.load_fleet(str(root / "registry" / "demo"))[0]
    ipm_vpn = vp.fleet_vars(fleet.vpn)
    rules = vp.isolation_rules(ipm_vpn)
    assert rules["policy"] == "drop" and rules["established"] is True
    assert {rule["destination"] for rule in rules["accept"]} == {c["prefix"] for c in rules["customers"]}
    assert all(rule["source"] == "10.59.0.0/24" for rule in rules["accept"])
    terminals = [
        (vp.host_vars(fleet.vpn, t)["ipm_vpn_address"], item["customer"])
        for t, item in fleet.vpn.terminals.items()
        if item["state"] == "assigned"
    ]
    for source, source_customer in terminals:
        assert vp.may_reach(rules, "10.59.0.10", source)
        assert not vp.may_reach(rules, source, "10.59.0.10")  # only replies go back (established)
        for destination, destination_customer in terminals:
            if source != destination:
                assert not vp.may_reach(rules, source, destination)
                assert vp.may_reach(vp.isolation_rules(ipm_vpn, True), source, destination) == (
                    source_customer == destination_customer
                )
    with pytest.raises(vp.VpnPlanError, match="expected the ipm_vpn variable"):
        vp.isolation_rules({"supernet": "10.60.0.0/14"})
    with pytest.raises(vp.VpnPlanError, match="expected two IPv4 addresses"):
        vp.may_reach(rules, "nowhere", "10.60.1.2")
