"""IR op families; importing this package registers every op."""

from . import attention, elementwise, layout, linalg, nn, quant, reduce, shape, winograd  # noqa: F401
