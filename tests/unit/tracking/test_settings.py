"""The tracking server's settings (tracking/settings.py): a malformed knob stops it at start, with
a message naming the knob."""

from __future__ import annotations

import pytest

from promptlab_stack.settings import SettingsError
from tracking.settings import TrackingSettings


@pytest.mark.parametrize(
    "knob, value",
    [
        ("GENERATION_TIMEOUT_SECONDS", "5m"),
        ("MLFLOW_WORKERS", "0"),
        ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "maybe"),
        ("BACKEND_STORE_URI", "mysql://mlflow@db/mlflow"),
        ("BACKEND_STORE_URI", "postgresql://mlflow:secret@postgres/mlflow"),
        ("ARTIFACTS_DESTINATION", "gs://bucket/path"),
        ("ARTIFACTS_DESTINATION", "s3:///no-bucket"),
    ],
)
def test_a_malformed_knob_is_refused_with_its_name_value_and_accepted_form(knob, value):
    with pytest.raises(SettingsError) as e:
        TrackingSettings.from_env({knob: value})
    assert knob in str(e.value) and value in str(e.value)


def test_values_are_typed():
    s = TrackingSettings.from_env(
        {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true", "MLFLOW_WORKERS": "4"}
    )
    assert s.mlflow_server_enable_job_execution is True and s.mlflow_workers == 4
