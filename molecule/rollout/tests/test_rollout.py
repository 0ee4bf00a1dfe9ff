"""Testinfra (ansible backend, real SSH): each terminal runs what the rollout should have left on it."""

import json


def test_terminal_runs_the_expected_release(host):
    variables = host.ansible.get_variables()
    deferred = variables["ipm_site_id"] == "newyork"
    expected = "2.3.1" if deferred else "2.4.0"
    assert host.file("/opt/ipm/app/current").linked_to.endswith("/releases/" + expected)
    address = variables["ansible_host"]
    health = json.loads(
        host.check_output(
            "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://%s:8080/health\", timeout=10).read().decode())'"
            % address
        )
    )
    assert health["status"] == "ok"
    assert health["version"] == expected


def test_delivered_terminals_keep_their_parameters_migrated(host):
    import yaml

    variables = host.ansible.get_variables()
    parameters = yaml.safe_load(host.file("/etc/ipm/app.yml").content_string)
    assert parameters["listen_address"] == variables["ansible_host"]
    if variables["ipm_site_id"] != "newyork":
        assert "idle_timeout_s" in parameters and "timeout" not in parameters
    else:
        assert "timeout" in parameters, "a deferred terminal is untouched"
