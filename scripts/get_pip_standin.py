"""Stand-in for pip's get-pip.py, which ansible-test downloads from a host this machine cannot reach.

ansible-test runs this file as __main__ with pip's install arguments (pins such as pip==24.2, then
--no-setuptools --no-wheel). It bootstraps pip from the standard library's ensurepip, then lets
that pip install the requested pins through the machine's own pip configuration.
"""

import ensurepip
import os
import subprocess
import sys


def main() -> int:
    ensurepip.bootstrap(upgrade=True)
    # ensurepip points PIP_CONFIG_FILE at /dev/null, which would hide the machine's index and CA.
    os.environ.pop("PIP_CONFIG_FILE", None)
    arguments = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
    return subprocess.call([sys.executable, "-m", "pip", "install", *arguments])


if __name__ == "__main__":
    sys.exit(main())
