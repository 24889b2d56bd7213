"""``python -m electric_proxy``: the ``electric-proxy`` command, where no script is on PATH."""

import sys

from .cli import main

sys.exit(main())
