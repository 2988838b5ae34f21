"""Package discovery (the rest of the build is in pyproject.toml): every package under harness/ is
found, never listed by hand, and the two top-level folders the product brief names ship inside it
as harness.leaderboard and harness.baselines (their folders: [tool.setuptools.package-dir])."""

from pathlib import Path

from setuptools import find_packages, setup

# The top-level folders shipped inside the package; each maps to its folder in pyproject.toml.
SHIPPED_FOLDERS = ["harness.leaderboard", "harness.baselines"]


def packages() -> list[str]:
    return [*find_packages(str(Path(__file__).parent), include=["harness", "harness.*"]), *SHIPPED_FOLDERS]


if __name__ == "__main__":
    setup(packages=packages())
