"""``python3 -m devcluster``: see :mod:`devcluster.cli`."""

from __future__ import annotations

import sys

from devcluster.cli import main

sys.exit(main())
