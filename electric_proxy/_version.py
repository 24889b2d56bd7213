"""The package's version, in the one place it is written.

``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``) for the distribution's metadata
and ``electric_proxy.__version__`` re-exports it; a module of its own so that reading it
imports nothing else (setuptools reads it statically, ``--version`` needs nothing more).
"""

__version__ = "0.1.0"
