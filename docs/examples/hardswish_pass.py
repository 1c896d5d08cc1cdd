"""A new pass and its test: recognize ``x * relu6(x + 3) / 6`` as one ``hardswish`` op."""
from edgeopt.pattern import Any, Const, Op, rewrite
from edgeopt.pipeline import Pass
from edgeopt.testing import check_rewrite

X = Any("x")
RELU6 = Op("clamp", Op("add", X, Const(value=3.0), commutative=True), attrs={"min": 0.0, "max": 6.0})
HARDSWISH = Op("div", Op("mul", X, RELU6, commutative=True), Const(value=6.0))


class RecognizeHardswish(Pass):
    """Requires ``unfused``; guarantees nothing new. ``div(mul(x, clamp(add(x, 3), 0, 6)), 6)`` -> ``hardswish(x)``."""
    name, requires = "recognize_hardswish", ("unfused",)

    def run(self, g):
        return {"rewritten": rewrite(g, HARDSWISH, lambda m, b: b.add("hardswish", [m["x"]]))}


def test_recognize_hardswish(add=3.0, div=6.0, rewritten=1):
    ops = ["hardswish"] if rewritten else ["add", "clamp", "mul", "div"]
    g = check_rewrite(RecognizeHardswish(), f"""graph main(%x: f32[2,8]) {{
        const %a: f32[] = [{add}]
        const %d: f32[] = [{div}]
        %s: f32[2,8] = add(%x, %a)
        %r: f32[2,8] = clamp(%s) {{"min": 0.0, "max": 6.0}}
        %m: f32[2,8] = mul(%x, %r)
        %y: f32[2,8] = div(%m, %d)
        return %y
    }}""", stats={"rewritten": rewritten})
    assert [n.op for n in g.nodes] == ops
