"""``python -m electric_proxy``: the ``electric-proxy`` command, where no script is on PATH."""

import sys

from .cli import main

if __name__ == "__main__":  # importing the module (pkgutil.walk_packages, docs) runs nothing
    sys.exit(main())
