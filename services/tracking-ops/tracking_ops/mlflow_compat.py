"""Every private MLflow name the operations commands rely on, in one place.

tests/unit/tracking_ops/test_mlflow_compat.py exercises each of them and fails with a message
naming it when an MLflow upgrade moves or changes one; nothing else in this package imports a
private MLflow name.
"""

from __future__ import annotations


def schema_revisions(store_uri: str) -> tuple[str | None, str]:
    """The tracking database's schema revision (None for an empty database) and the one this
    MLflow expects.

    Why private: MLflow checks the schema only inside `mlflow server` (which then refuses to start
    with "Detected out-of-date database schema") and offers no public way to ask; the db-upgrade
    service must know before it decides to migrate (db_upgrade.py).
    """
    from mlflow.store.db.utils import (
        _get_latest_schema_revision,
        _get_schema_version,
        create_sqlalchemy_engine_with_retry,
    )

    engine = create_sqlalchemy_engine_with_retry(store_uri)
    try:
        return _get_schema_version(engine), _get_latest_schema_revision()
    finally:
        engine.dispose()
