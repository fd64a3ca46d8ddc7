"""``python -m beam_jobs.fid``: see :mod:`beam_jobs.fid`."""
import sys

from beam_jobs.fid.cli import cli

if __name__ == "__main__":
    sys.exit(cli())
