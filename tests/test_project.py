"""The project's promises about itself: public API, README diagram, example config, migrations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

import orchestrator
from orchestrator.config import load_settings
from orchestrator.lifecycle import TRANSITIONS, mermaid
from orchestrator.store.db import HEAD_REVISION, alembic_config, current_revision, head_revision, make_engine, upgrade

ROOT = Path(__file__).resolve().parents[1]


def test_exported_members_are_exactly_the_public_api() -> None:
    import inspect

    assert orchestrator.__all__ == sorted(orchestrator.__all__)
    assert dir(orchestrator) == orchestrator.__all__
    for name in orchestrator.__all__:  # every public name resolves (the face loads them on first use)
        assert getattr(orchestrator, name) is not None, name
    exported = [name for name, value in vars(orchestrator).items()
                if not name.startswith("_") and not inspect.ismodule(value)]
    assert sorted(exported) == sorted(n for n in orchestrator.__all__ if n != "__version__")
    with pytest.raises(AttributeError):
        orchestrator.no_such_name  # noqa: B018


def test_python_m_on_a_module_prints_no_warning() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-W", "always", "-m", "orchestrator.lifecycle"], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.startswith("stateDiagram-v2")
    assert "Warning" not in proc.stderr, proc.stderr


def test_readme_diagram_and_table_match_the_transitions_table() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```mermaid\n(.*?)\n```", readme, re.S)
    assert block is not None and block.group(1) == mermaid(), "regenerate: python -m orchestrator.lifecycle"
    for t in TRANSITIONS:
        assert f"| `{t['trigger']}` |" in readme and t["doc"] in readme


def test_example_config_documents_every_setting_and_parses() -> None:
    path = ROOT / "config" / "drs-teardown.example.toml"
    settings = load_settings(str(path), {}, {})
    assert settings.region == "cn-north-4"
    text_ = path.read_text()
    for key in ("region", "project_id", "endpoint", "iam_endpoint", "ca_bundle", "insecure_http", "rate",
                "concurrency", "url", "batch_size", "poll_interval", "stop_timeout", "delete_timeout", "timeout",
                "no_force", "force", "record_breakpoint", "max_targets", "claim_size", "lease_seconds",
                "ticket", "reason",
                "token", "iam_user",
                "iam_domain", "iam_password", "access_key", "secret_key", "security_token"):
        assert re.search(rf"^#? ?{key} =", text_, re.M), key


def test_head_revision_constant_matches_alembic() -> None:
    assert head_revision() == HEAD_REVISION


def test_upgrade_on_an_empty_sqlite_database_and_models_agree(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    cfg = alembic_config(engine)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.check(cfg)  # raises if models and migrations disagree
    upgrade(engine)  # idempotent
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert (tmp_path / "m.db").stat().st_mode & 0o077 == 0
    engine.dispose()


def test_downgrade_then_upgrade_round_trips(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'd.db'}")
    upgrade(engine)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    engine.dispose()


@pytest.mark.postgres
def test_upgrade_on_postgresql_and_models_agree(pg_url: str) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    cfg = alembic_config(engine)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.check(cfg)
    engine.dispose()


def test_migrations_ship_inside_the_package() -> None:
    from importlib.resources import files

    versions = files("orchestrator.migrations") / "versions"
    assert any(p.name.startswith("0001") for p in versions.iterdir())
    assert (files("orchestrator.profiles") / "calm.toml").is_file()
