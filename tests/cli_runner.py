"""The CLI in a subprocess, as a user runs it (shared by the CLI tests)."""

import os
import subprocess
import sys


def run_cli(*args, root=None):
    """The CLI in a subprocess: on the tiny assets under `root`, else on the shipped ones (even
    while a module-scoped `tiny_env` has pointed this process's environment at tiny assets)."""
    shipped = ("STEERING_BASE_MODEL", "STEERING_ADAPTERS", "STEERING_BACKEND")
    env = {k: v for k, v in os.environ.items() if k not in shipped}
    env["HF_HUB_OFFLINE"] = "1"
    if root is not None:
        env.update(
            STEERING_BASE_MODEL=str(root / "tiny-base"), STEERING_ADAPTERS=str(root / "adapters")
        )
    return subprocess.run(
        [sys.executable, "-m", "steering", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
