"""Print the pip version ansible-test bootstraps into its virtual environments (for example 24.2)."""

from ansible_test._internal.python_requirements import get_venv_packages


class _Python:
    version = "3.11"


print(get_venv_packages(_Python())["pip"])
