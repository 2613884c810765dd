"""`vocabscale dvc-commit`: record a finished Snakemake run with DVC (`handover`); exits 1,
saying why, when the results cannot be recorded as they are."""

from __future__ import annotations

import argparse
import logging
import sys

from vocabscale.handover import HandOverError, dvc_commit

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vocabscale dvc-commit` runs at the repository root and takes no options."""


def run(args: argparse.Namespace) -> None:
    try:
        dvc_commit()
    except HandOverError as error:
        log.error("%s", error)
        sys.exit(1)
