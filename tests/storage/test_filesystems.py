"""Where a SQLite database may live: not on a network or FUSE filesystem."""

from pathlib import Path

import pytest

from storage.engine import check_local_filesystem, filesystem_type, make_engine

MOUNTINFO = """\
22 1 0:21 / / rw,relatime - overlay overlay rw
40 22 0:35 / /data rw,relatime - fuse.s3fs s3fs rw,user_id=0
41 22 0:36 / /data/local rw,relatime - ext4 /dev/sda1 rw
42 22 0:37 / /mnt/with\\040space rw - nfs4 server:/x rw
"""


def test_the_longest_mount_point_above_a_path_decides():
    assert filesystem_type(Path("/data/steering.db"), MOUNTINFO) == "fuse.s3fs"
    assert filesystem_type(Path("/data/local/steering.db"), MOUNTINFO) == "ext4"
    assert filesystem_type(Path("/home/user/app/data"), MOUNTINFO) == "overlay"
    assert filesystem_type(Path("/mnt/with space/db"), MOUNTINFO) == "nfs4"


def test_sqlite_is_refused_on_fuse_and_network_filesystems_with_the_reason():
    for path in ("/data", "/mnt/with space"):
        with pytest.raises(ValueError, match="WAL and locks are not safe; keep the database"):
            check_local_filesystem(Path(path), MOUNTINFO)
    check_local_filesystem(Path("/data/local"), MOUNTINFO)
    check_local_filesystem(Path("/home/user/app/data"), MOUNTINFO)


def test_a_local_database_opens(tmp_path):
    assert filesystem_type(tmp_path) is not None  # this machine's /proc/self/mountinfo is read
    make_engine(f"sqlite:///{tmp_path / 'local.db'}").dispose()
