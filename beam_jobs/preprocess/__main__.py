"""``python -m beam_jobs.preprocess``: see :mod:`beam_jobs.preprocess`."""
import sys

from beam_jobs.preprocess.cli import main

if __name__ == "__main__":
    sys.exit(main())
