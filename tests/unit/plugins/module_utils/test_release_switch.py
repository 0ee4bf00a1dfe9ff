"""Pure parts of the delivery transaction, on a temporary tree: installed releases, pruning, the switch."""

from __future__ import annotations

import os

from ansible_collections.ipm.fleet.plugins.module_utils import release_switch as rs


def releases(root, *names):
    for name in names:
        os.makedirs(os.path.join(root, "opt/ipm/app/releases", name))


def test_leftover_staging_directory_is_not_a_release(tmp_path):
    # A delivery killed mid-unpack leaves releases/.<version>.<random>: later deliveries must not trip on it.
    releases(str(tmp_path), "2.3.1", "2.10.0", "2.4.0", ".2.4.1.k3j2")
    assert rs.installed_versions(str(tmp_path)) == ["2.3.1", "2.4.0", "2.10.0"]


def test_prune_keeps_the_newest_and_never_the_protected(tmp_path):
    root = str(tmp_path)
    releases(root, "2.1.0", "2.2.0", "2.3.1", "2.4.0", ".2.4.1.tmp")
    removed = rs.prune(2, {"2.4.0", "2.1.0"}, root)
    assert removed == ["2.2.0", "2.3.1"]
    assert sorted(os.listdir(os.path.join(root, "opt/ipm/app/releases"))) == [".2.4.1.tmp", "2.1.0", "2.4.0"]


def test_switch_current_is_a_relative_link_replaced_atomically(tmp_path):
    root = str(tmp_path)
    releases(root, "2.3.1", "2.4.0")
    rs.switch_current("2.3.1", root)
    rs.switch_current("2.4.0", root)
    assert os.readlink(os.path.join(root, "opt/ipm/app/current")) == "releases/2.4.0"
    assert rs.current_version(root) == "2.4.0"
    assert not os.path.lexists(os.path.join(root, "opt/ipm/app/current.new"))
