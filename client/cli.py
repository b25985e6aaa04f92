"""The ``cunsync`` command line."""

from __future__ import annotations

import click

import sync


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(sync.__version__, prog_name="cunsync")
def cli() -> None:
    "cunsync: offline-first sync for village social-work stations."
