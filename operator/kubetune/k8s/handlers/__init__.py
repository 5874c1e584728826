"""kopf handlers, one module per concern. Importing this package registers them."""

from . import lifecycle, watch  # noqa: F401
