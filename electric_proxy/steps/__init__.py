"""Built-in chain steps; each registers under the ``electric_proxy.middleware`` entry point."""
