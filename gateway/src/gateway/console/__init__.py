"""The operations console at ``/console``: see :mod:`gateway.console.routes`."""
