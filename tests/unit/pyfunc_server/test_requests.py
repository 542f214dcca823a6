"""Request parsing and validation (pyfunc_server/requests.py)."""

from __future__ import annotations

import pytest

from pyfunc_server.requests import SamplingParams


@pytest.mark.parametrize(
    "stop, words",
    [
        (["x"] * 17, "stop has 17 strings; at most 16"),
        (["y" * 257], "at most 256 characters"),
    ],
)
def test_the_stop_list_is_bounded_with_a_400_that_says_so(stop, words):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=words) as e:
        SamplingParams.from_params({"stop": stop})
    assert e.value.get_http_status_code() == 400
    assert SamplingParams.from_params({"stop": ["x"] * 16}).stop == ("x",) * 16
