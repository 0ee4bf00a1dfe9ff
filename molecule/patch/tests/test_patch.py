"""Testinfra (ansible backend, real SSH): each terminal has the security updates, the holds, and was rebooted."""


def version(host, package):
    return host.check_output("dpkg-query -W -f '${Version}' %s" % package)


def test_security_updates_only(host):
    assert version(host, "ipm-kernel-sim") == "1.1"
    assert version(host, "ipm-openssl-sim") == "1.0+sec1"
    assert version(host, "ipm-base-tools") == "1.0"  # 1.1 is a regular update, not a security one


def test_the_release_packages_are_held(host):
    assert set(host.check_output("apt-mark showhold").split()) == {"ipm-runtime", "python3"}
    assert version(host, "ipm-runtime") == "1.0"


def test_rebooted_inside_the_window_and_healthy(host):
    assert not host.file("/var/run/reboot-required").exists
    assert host.service("ipm-app").is_running
    assert host.run("dpkg --audit").stdout == ""


def test_mirror_source_is_deb822_signed_by_its_keyring(host):
    source = host.file("/etc/apt/sources.list.d/ipm-mirror.sources").content_string
    assert "Signed-By: /etc/apt/keyrings/ipm-mirror.gpg" in source
    assert "Suites: bookworm-ipm bookworm-ipm-updates bookworm-ipm-security" in source
