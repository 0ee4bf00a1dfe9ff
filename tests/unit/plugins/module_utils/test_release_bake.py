"""The bake on a temporary terminal root with a real ipm-app: repeated probes, the failing probe in words,
the rollback of the recorded delivery (detached, under the lock), and when it refuses to roll back."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils import release_bake as rb
from ansible_collections.ipm.fleet.plugins.module_utils import release_switch as rs

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
from app_terminal import AppService, built, free_port, terminal


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    # 2.4.1 as built for the lab answers healthy for 5 s after its start: 3 s is enough here.
    return {"2.4.0": built("2.4.0", out), "2.4.1": built("2.4.1", out, healthy_for_s=3)}


class Site:
    def __init__(self, root: Path, service: AppService, artifacts: dict):
        self.root, self.service, self.artifacts = root, service, artifacts

    def deliver(self, version: str, settle: float = 0.5) -> dict:
        artifact = self.artifacts[version]
        result = rs.deliver(
            version,
            str(artifact.artifact),
            artifact.sha256,
            settle=settle,
            root=str(self.root),
            service=self.service,
            port=self.service.port,
        )
        assert result["msg"] == "delivered %s (from %s)" % (version, result["from_version"]), result
        return result

    def bake(self, version: str, duration: float, **options) -> dict:
        return rb.bake(version, duration, root=str(self.root), service=self.service, port=self.service.port, **options)

    def health(self) -> dict:
        return rs.probe_health("http://127.0.0.1:%d/health" % self.service.port)[1]

    @property
    def record(self) -> Path:
        return self.root / "var/lib/ipm/delivery/previous.json"


@pytest.fixture
def site(tmp_path, artifacts):
    """A terminal root running 2.3.1 at the factory; ipm-app is stopped afterwards, whoever started it."""
    root = terminal(tmp_path)
    service = AppService(root, free_port())
    service.restart()
    rs.wait_healthy("http://127.0.0.1:%d/health" % service.port, "2.3.1", None, 30, 0)
    yield Site(root, service, artifacts)
    service.stop()


def test_a_healthy_release_is_probed_over_the_whole_duration(site):
    site.deliver("2.4.0")
    result = site.bake("2.4.0", 2, interval=0.5)
    assert result["healthy"] is True and "failed" not in result, result
    assert result["probes"] == 5, "at 0, 0.5, 1, 1.5 and 2 s"
    assert 2 <= result["watched_s"] < 4 and result["healthy_for_s"] == result["watched_s"]
    assert result["reason"] is None and result["changed"] is False and result["rolled_back"] is False
    assert result["health"]["version"] == "2.4.0" and result["health"]["status"] == "ok"
    assert result["msg"].startswith("release 2.4.0 stayed healthy for ")
    assert site.record.exists(), "a healthy bake leaves the delivery record alone"

    single = site.bake("2.4.0", 0, interval=5)
    assert single["healthy"] is True and single["probes"] == 1


def test_a_release_that_turns_unhealthy_is_rolled_back_to_the_recorded_one(site):
    site.deliver("2.4.0")
    parameters_on_240 = (site.root / "etc/ipm/app.yml").read_bytes()
    # 2.4.1 answers healthy for 3 s after its start, then 503: a 1 s settle period lets it through.
    site.deliver("2.4.1", settle=1)

    checked = site.bake("2.4.1", 8, interval=0.5, check_mode=True)
    assert checked["healthy"] is False and checked["failed"] is True, checked
    assert checked["reason"].startswith("health answered 503 status failing after ")
    assert "would roll back to 2.4.0" in checked["msg"] and checked["rolled_back"] is False
    assert rs.current_version(str(site.root)) == "2.4.1" and site.record.exists(), "check mode only watches"

    site.service.restart()  # healthy again for 3 s
    rs.wait_healthy("http://127.0.0.1:%d/health" % site.service.port, "2.4.1", None, 30, 0)
    result = site.bake("2.4.1", 8, interval=0.5)
    assert result["healthy"] is False and result["failed"] is True, result
    assert result["reason"].startswith("health answered 503 status failing after ")
    assert 1 <= result["healthy_for_s"] <= 4 and result["probes"] >= 3
    assert result["msg"].startswith(result["reason"]) and result["msg"].endswith("rolled back to 2.4.0, healthy")
    assert result["changed"] is True and result["rolled_back"] is True and result["rolled_back_to"] == "2.4.0"
    assert result["rollback"] == {"to": "2.4.0", "healthy": True, "error": None}
    assert result["health"]["status"] == "failing", "the last answer of the watch"
    assert "back on 2.4.0, healthy" in result["steps"]

    assert rs.current_version(str(site.root)) == "2.4.0"
    answer = site.health()
    assert answer["version"] == "2.4.0" and answer["status"] == "ok", "restarted by the detached rollback"
    assert (site.root / "etc/ipm/app.yml").read_bytes() == parameters_on_240
    assert rs.installed_versions(str(site.root)) == ["2.3.1", "2.4.0"], "2.4.1 was new: it goes"
    assert not site.record.exists(), "no record claims a delivery of 2.4.1 any more"

    again = site.bake("2.4.0", 0)
    assert again["healthy"] is True, again


def test_a_stopped_application_is_rolled_back_once_the_lock_is_free(site):
    site.deliver("2.4.0")
    site.service.stop()
    with rs.Lock(rs.lock_path(str(site.root))):
        busy = site.bake("2.4.0", 0)
    assert busy["failed"] is True and busy["reason"].startswith("health did not answer on http://127.0.0.1:")
    assert busy["rolled_back"] is False and "another delivery is running" in busy["rollback"]["error"]
    assert rs.current_version(str(site.root)) == "2.4.0"

    result = site.bake("2.4.0", 0)
    assert result["rolled_back"] is True and result["rollback"]["healthy"] is True, result
    assert rs.current_version(str(site.root)) == "2.3.1" and site.health()["version"] == "2.3.1"
    assert "timeout" in rs.read_parameters(str(site.root))[0], "the 2.3.1 parameters are back"


def test_without_a_record_of_the_release_nothing_is_rolled_back(site):
    site.service.stop()
    factory = site.bake("2.3.1", 0)
    assert factory["failed"] is True and factory["rolled_back"] is False
    assert "not rolled back: there is no delivery record" in factory["msg"], factory["msg"]

    site.service.restart()
    rs.wait_healthy("http://127.0.0.1:%d/health" % site.service.port, "2.3.1", None, 30, 0)
    site.deliver("2.4.0")
    other = site.bake("2.4.1", 0)
    assert other["reason"] == "/opt/ipm/app/current points at releases/2.4.0, not 2.4.1 after 0.0 s"
    assert "the last delivery recorded on this terminal" in other["msg"] and "is of 2.4.0, not 2.4.1" in other["msg"]
    assert other["changed"] is False and rs.current_version(str(site.root)) == "2.4.0" and site.record.exists()


def test_parameters_changed_behind_the_application_fail_the_probe(site):
    site.deliver("2.4.0")
    config = site.root / "etc/ipm/app.yml"
    config.write_text(config.read_text().replace("currency: EUR", "currency: CHF"))
    result = site.bake("2.4.0", 0, rollback=False)
    assert result["failed"] is True and result["reason"].startswith("health answered parameters_sha256 ")
    assert "(the digest of /etc/ipm/app.yml)" in result["reason"]
    assert result["msg"].endswith("not rolled back (rollback=false): release 2.4.0 stays current")
    assert result["changed"] is False and rs.current_version(str(site.root)) == "2.4.0"
