"""promptlab-restore (services/tracking-ops/tracking_ops/restore.py) takes only what a backup
holds; the round trip is in test_backup.py."""

from __future__ import annotations

import io
import tarfile

import pytest

from tracking_ops.restore import restore


def test_restore_refuses_a_file_that_is_not_a_backup(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("artifacts/../../etc/passwd")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(SystemExit, match="not part of a promptlab-backup file"):
        restore(io.BytesIO(out.getvalue()), tmp_path, tmp_path)
