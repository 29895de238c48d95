"""Package layout (the rest of the metadata is in pyproject.toml).

p2pfl's own subpackages are discovered, so a new one is never forgotten; the ``bootstrap/`` and
``simulations/`` folders install as ``p2pfl.bootstrap`` and ``p2pfl.sim``. Nothing installs top-level
besides ``p2pfl`` (``tests/test_packaging.py`` checks both).
"""

from setuptools import find_packages, setup

PACKAGE_DIR = {"p2pfl.bootstrap": "bootstrap", "p2pfl.sim": "simulations"}
PACKAGES = [*find_packages(include=["p2pfl", "p2pfl.*"]), *PACKAGE_DIR]

if __name__ == "__main__":
    setup(packages=PACKAGES, package_dir=PACKAGE_DIR)
