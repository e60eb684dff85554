"""The app's command line: `python app.py --base-model M --adapters DIR --objectives-file F`.

Each flag stands for the environment variable the service reads (STEERING_BASE_MODEL,
STEERING_ADAPTERS, STEERING_OBJECTIVES_FILE), so a Space configured by variables and a local
run configured by flags behave alike.
"""

from __future__ import annotations

import argparse
import os

from steering.model.methods import ADAPTERS_ENV
from steering.objectives.declared import OBJECTIVES_FILE_ENV

FLAGS = {
    "--base-model": (
        "STEERING_BASE_MODEL",
        "local model directory, .gguf, or a Hub id where the Hub is reachable",
    ),
    "--adapters": (ADAPTERS_ENV, "directory holding clp/, prompt/ and soups/"),
    "--objectives-file": (OBJECTIVES_FILE_ENV, "TOML file declaring the objectives"),
}


def apply_app_arguments(argv: list[str]) -> None:
    """Set the environment from the flags given; argparse exits 2 on a bad command line."""
    parser = argparse.ArgumentParser(prog="python app.py", description=__doc__.split("\n")[0])
    for flag, (variable, text) in FLAGS.items():
        parser.add_argument(flag, help=f"{text} (default: {variable})")
    args = vars(parser.parse_args(argv))
    for flag, (variable, _) in FLAGS.items():
        value = args[flag.removeprefix("--").replace("-", "_")]
        if value:
            os.environ[variable] = value
