"""GPU tests run on a machine with a CUDA GPU and no Postgres or Redis (the device
machine): they need only the tiny model, so the suite's database and broker set-up is
replaced by nothing here."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def database() -> None:
    return None


@pytest.fixture(scope="session", autouse=True)
def broker() -> None:
    return None
