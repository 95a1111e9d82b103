"""`python -m ecg_edge.cli`: the same as the `ecg-edge` command."""

import sys

from ecg_edge.cli import app

sys.exit(app())
