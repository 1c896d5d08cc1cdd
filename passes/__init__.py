"""edgeopt's passes, one per file. Each module registers its pass with ``@register_pass``.

A pass file states its contract in its docstring: what it requires, what it guarantees, and a small
before/after IR example.
"""
