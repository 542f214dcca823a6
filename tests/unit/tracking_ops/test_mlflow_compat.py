"""The private MLflow names the operations commands rely on (tracking_ops/mlflow_compat.py), one
test each: when an MLflow upgrade moves or changes one, the test says which, so the seam can be
mended (or dropped, if MLflow now offers a public way) before anything else breaks."""

from __future__ import annotations

import pytest

UPGRADE = "MLflow changed {name}, which {module} relies on: mend it there (or use a public API now)"


def test_tracking_ops_reads_the_schema_revision_as_mlflow_server_checks_it(tmp_path):
    from tracking_ops.mlflow_compat import schema_revisions

    msg = UPGRADE.format(
        name="mlflow.store.db.utils._get_schema_version/_get_latest_schema_revision",
        module="services/tracking-ops/tracking_ops/mlflow_compat.py",
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    try:
        assert schema_revisions(uri)[0] is None, msg  # an empty database
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments()  # MLflow creates its tables
        current, head = schema_revisions(uri)
    except ImportError as e:
        pytest.fail(f"{msg}: {e}")
    assert current == head and len(head) == 12, msg
