"""edgeopt's IR: typed values, a registry of ops, a text form, a verifier and a reference interpreter."""

from .graph import Graph, Node, Value
from .interpreter import interpret
from .registry import OpDef, OpError, all_ops, get_op, register
from .text import ParseError, parse_graph, print_graph
from .types import DTYPES, QuantParams, TensorType, parse_type
from .verify import VerificationError, verify

__all__ = [
    "DTYPES", "Graph", "Node", "OpDef", "OpError", "ParseError", "QuantParams", "TensorType", "Value",
    "VerificationError", "all_ops", "get_op", "interpret", "parse_graph", "parse_type", "print_graph",
    "register", "verify",
]
