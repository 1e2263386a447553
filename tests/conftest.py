import pytest

from helpers import Cli


@pytest.fixture
def cli(capfd):
    return Cli(capfd)
