"""Testinfra (ansible backend, real SSH): each terminal holds the parameters the rollout should have left on it."""

import json

import yaml


def test_parameters_file_holds_the_layered_values_and_is_root_only(host):
    variables = host.ansible.get_variables()
    config = host.file("/etc/ipm/app.yml")
    assert config.user == "root" and config.group == "root"
    assert config.mode == 0o600, oct(config.mode)
    parameters = yaml.safe_load(config.content_string)
    assert parameters["listen_address"] == variables["ansible_host"], "kept from the factory"
    if variables["ipm_site_id"] == "newyork":
        assert parameters.get("currency", "EUR") == "EUR", "a deferred terminal is untouched"
        assert not parameters.get("payment_api_token")
        return
    assert (parameters["currency"], parameters["language"], parameters["max_amount"]) == ("CHF", "fr", 150.0)
    assert parameters["payment_api_token"] == "molecule-token-not-shown"
    label = "Paris - Sortie B" if host.backend.get_hostname() == "mol-par-par2" else ""
    assert parameters["terminal_label"] == label


def test_the_application_runs_the_parameters_in_the_file(host):
    variables = host.ansible.get_variables()
    digest = host.check_output("/opt/ipm/app/current/bin/ipm-app --print-digest /etc/ipm/app.yml").strip()
    health = json.loads(
        host.check_output(
            "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://%s:8080/health\", timeout=10).read().decode())'"
            % variables["ansible_host"]
        )
    )
    assert health["status"] == "ok"
    assert health["parameters_sha256"] == digest
