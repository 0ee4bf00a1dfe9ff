"""Testinfra (ansible backend, real SSH) checks after converging ipm.fleet.app_parameters."""

import json

import yaml

HEALTH = (
    "python3 -c 'import sys, urllib.request; "
    'print(urllib.request.urlopen("http://%s:8080/health", timeout=10).read().decode())\''
)


def _address(host):
    return host.ansible.get_variables()["ansible_host"]


def test_terminal_is_the_instance(host):
    assert host.check_output("hostname") == host.ansible.get_variables()["inventory_hostname"]
    assert host.service("ipm-app").is_running


def test_parameters_file_has_the_converged_values(host):
    app_yml = host.file("/etc/ipm/app.yml")
    assert app_yml.user == "root"
    assert app_yml.mode == 0o600
    parameters = yaml.safe_load(app_yml.content_string)
    assert parameters["currency"] == "CHF"
    assert parameters["max_amount"] == 150.0
    # The terminal's own address is kept from the factory file.
    assert parameters["listen_address"] == _address(host)


def test_health_reports_the_digest_of_the_parameters(host):
    digest = host.check_output("/opt/ipm/app/current/bin/ipm-app --print-digest /etc/ipm/app.yml").strip()
    health = json.loads(host.check_output(HEALTH % _address(host)))
    assert health["status"] == "ok"
    assert health["version"] == "2.3.1"
    assert health["parameters_sha256"] == digest
