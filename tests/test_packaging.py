"""pyproject.toml lists every package of the source tree, so a (non-editable) install ships all of them."""

import os

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (3.10 has no TOML reader in the standard library)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_package_is_listed_in_pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    listed, dirs = set(tool["packages"]), tool["package-dir"]
    found = set()
    for name, src in dirs.items():
        for here, _, files in os.walk(os.path.join(ROOT, src)):
            if "__init__.py" in files and "__pycache__" not in here:
                rel = os.path.relpath(here, os.path.join(ROOT, src))
                found.add(name if rel == "." else f"{name}.{rel.replace(os.sep, '.')}")
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
