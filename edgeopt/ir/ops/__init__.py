"""IR op families; importing this package registers every op."""

from . import attention, elementwise, layout, linalg, nn, quant, reduce, shape, sort, winograd  # noqa: F401
