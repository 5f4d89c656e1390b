"""Every adapter call has a bound: a database that accepts connections and never answers
(a hung login) makes a report say "cannot read (timed out after N s)" and return."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runbooks.adapters.mongo import MongoAdapter
from runbooks.catalog import load_catalog
from runbooks.engine.config.environments import MongoConfig
from runbooks.engine.lifecycle.requests import Request
from runbooks.interfaces import InfrastructureError
from tests.conftest import EngineFactory
from tests.fakes.infra import FakeInfrastructure
from tests.support.people import ALICE


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A MongoDB that answers the handshake (``hello``) and then never answers again: the
    login (``saslStart``) and every command wait forever, as with a hung server."""
    from mockupdb import MockupDB

    server = MockupDB(auto_ismaster={"maxWireVersion": 21})
    port = server.run()
    yield port
    server.stop()


def test_a_database_that_never_answers_times_out_with_a_clear_error(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SILENT_MONGODB_URI", f"mongodb://bot:secret@127.0.0.1:{silent_server}/")
    adapter = MongoAdapter("production", MongoConfig(uri_env="SILENT_MONGODB_URI", timeout=1.0))
    try:
        with pytest.raises(InfrastructureError, match=r"replSetGetStatus: timed out after 1 s"):
            adapter.topology()
    finally:
        adapter.close()


class _SilentDatabase(FakeInfrastructure):
    def __init__(self, adapter: MongoAdapter) -> None:
        super().__init__()
        self.adapter = adapter

    def database(self, environment: str) -> MongoAdapter:
        return self.adapter


def test_dr_status_reports_the_timeout_and_returns(
    silent_server: int, monkeypatch: pytest.MonkeyPatch, make_engine: EngineFactory
) -> None:
    monkeypatch.setenv("SILENT_MONGODB_URI", f"mongodb://bot:secret@127.0.0.1:{silent_server}/")
    adapter = MongoAdapter("production", MongoConfig(uri_env="SILENT_MONGODB_URI", timeout=1.0))
    infra = _SilentDatabase(adapter)
    infra.aws("us-east-1").weights["example.com.", "api-production.example.com."] = {
        "us-east-1": 100,
        "us-west-2": 0,
    }
    engine = make_engine(registry=load_catalog(), adapters_factory=lambda: infra)
    try:
        result = engine.request(Request("dr.status", {}, ALICE))
    finally:
        adapter.close()
    assert result.execution is not None
    [line] = [n for n in result.plan.notes if n.startswith("database (atlas)")]
    assert line.startswith("database (atlas): cannot read (production database: ")
    assert "timed out after 1 s" in line
    assert "secret" not in line
