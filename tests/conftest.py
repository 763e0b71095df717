"""Test configuration: every module in tests/fixtures is a pytest plugin.

Each area of the product (Exchange simulator, DNS server, Azurite) keeps its fixtures in its
own module there, so adding an area never means editing a shared file.
"""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{path.stem}"
    for path in (Path(__file__).parent / "fixtures").glob("*.py")
    if path.stem != "__init__"
)
