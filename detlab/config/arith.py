"""A restricted arithmetic evaluator for ``!!python/object/apply:eval`` tags in config files.

Detectron2's ``Base-RetinaNet.yaml`` computes its anchor sizes with a Python expression::

    SIZES: !!python/object/apply:eval ["[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, 64]]"]

detlab never hands such text to Python's ``eval``. :func:`evaluate_arithmetic` parses it with
``ast`` and computes it itself, admitting only: int and float literals; ``+ - * / **`` between
numbers (and unary ``+``/``-``); list and tuple displays; list comprehensions whose ``for``
clauses iterate over literal lists (or over expressions that evaluate to lists), without
``if`` clauses. Names exist only as comprehension variables. Calls, attributes, subscripts,
strings, comparisons, lambdas and everything else are refused with :class:`ArithmeticRefused`
naming what was found. Exponents and results are bounded, so no expression can exhaust memory
or time.

:class:`ConfigYamlLoader` is ``yaml.SafeLoader`` plus a constructor for that one tag.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

import yaml

__all__ = ["ArithmeticRefused", "ConfigYamlLoader", "evaluate_arithmetic"]

EVAL_TAG = "tag:yaml.org,2002:python/object/apply:eval"
_MAX_EXPONENT = 64
_MAX_ABS = 1e300
_MAX_ITEMS = 100_000
_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class ArithmeticRefused(ValueError):
    """The expression holds something other than arithmetic on numbers and lists."""


def _describe(node: ast.AST) -> str:
    names = {
        ast.Call: "a function call",
        ast.Attribute: "an attribute access",
        ast.Subscript: "a subscript",
        ast.Name: "a name",
        ast.Lambda: "a lambda",
        ast.Compare: "a comparison",
        ast.BoolOp: "a boolean operator",
        ast.Dict: "a dict",
        ast.Set: "a set",
        ast.DictComp: "a dict comprehension",
        ast.SetComp: "a set comprehension",
        ast.GeneratorExp: "a generator expression",
        ast.IfExp: "a conditional expression",
        ast.JoinedStr: "an f-string",
        ast.NamedExpr: "an assignment expression",
        ast.Starred: "a starred expression",
    }
    for cls, text in names.items():
        if isinstance(node, cls):
            return text
    if isinstance(node, ast.Constant):
        return f"the literal {node.value!r}"
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return f"the operator {type(node.op).__name__}"
    return f"a {type(node).__name__} expression"


def _number(value: Any, where: ast.AST) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArithmeticRefused(
            f"arithmetic applies to numbers only, not to {type(value).__name__} "
            f"(at column {getattr(where, 'col_offset', 0) + 1})"
        )
    return value


def _check_size(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ArithmeticRefused("the result is not a finite number")
    if isinstance(value, (int, float)) and abs(value) > _MAX_ABS:
        raise ArithmeticRefused("a number in the expression is too large")
    return value


class _Evaluator:
    def __init__(self) -> None:
        self.items = 0

    def eval(self, node: ast.AST, scope: dict[str, Any]) -> Any:
        if isinstance(node, ast.Expression):
            return self.eval(node.body, scope)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ArithmeticRefused(f"found {_describe(node)}; only numbers are allowed")
            return node.value
        if isinstance(node, ast.Name) and node.id in scope:
            return scope[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left = _number(self.eval(node.left, scope), node.left)
            right = _number(self.eval(node.right, scope), node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
                raise ArithmeticRefused(f"the exponent {right} is larger than {_MAX_EXPONENT}")
            if isinstance(node.op, ast.Div) and right == 0:
                raise ArithmeticRefused("division by zero")
            try:
                return _check_size(_BINOPS[type(node.op)](left, right))
            except (OverflowError, ZeroDivisionError) as err:
                raise ArithmeticRefused(f"the arithmetic fails ({err})") from None
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](_number(self.eval(node.operand, scope), node.operand))
        if isinstance(node, (ast.List, ast.Tuple)):
            values = [self.eval(e, scope) for e in node.elts]
            self._count(len(values))
            return values if isinstance(node, ast.List) else tuple(values)
        if isinstance(node, ast.ListComp):
            return self._list_comp(node, scope)
        raise ArithmeticRefused(
            f"found {_describe(node)}; only numbers, + - * / **, lists and list comprehensions "
            "over lists are allowed"
        )

    def _count(self, n: int) -> None:
        self.items += n
        if self.items > _MAX_ITEMS:
            raise ArithmeticRefused(f"the expression builds more than {_MAX_ITEMS} values")

    def _list_comp(self, node: ast.ListComp, scope: dict[str, Any]) -> list:
        out: list = []

        def loop(i: int, env: dict[str, Any]) -> None:
            if i == len(node.generators):
                out.append(self.eval(node.elt, env))
                self._count(1)
                return
            gen = node.generators[i]
            if gen.ifs or gen.is_async:
                raise ArithmeticRefused("list comprehensions may not have 'if' clauses")
            if not isinstance(gen.target, ast.Name):
                raise ArithmeticRefused("a comprehension variable must be a single name")
            seq = self.eval(gen.iter, env)
            if not isinstance(seq, (list, tuple)):
                raise ArithmeticRefused("a comprehension must iterate over a list")
            for value in seq:
                loop(i + 1, {**env, gen.target.id: value})

        loop(0, dict(scope))
        return out


def evaluate_arithmetic(expression: str) -> Any:
    """Value of an arithmetic ``expression`` (numbers, lists); never runs Python code.

    >>> evaluate_arithmetic("[[x, x * 2] for x in [32, 64]]")
    [[32, 64], [64, 128]]

    Raises :class:`ArithmeticRefused` for anything outside the admitted grammar.
    """
    if not isinstance(expression, str):
        raise ArithmeticRefused(f"expected the expression as text, got {type(expression).__name__}")
    if len(expression) > 10_000:
        raise ArithmeticRefused("the expression is longer than 10000 characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as err:
        raise ArithmeticRefused(f"it is not a valid expression ({err.msg})") from None
    return _Evaluator().eval(tree, {})


def _construct_eval(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    args = loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else None
    if not args or len(args) != 1 or not isinstance(args[0], str):
        raise yaml.constructor.ConstructorError(
            None, None, "!!python/object/apply:eval needs one quoted expression", node.start_mark
        )
    try:
        return evaluate_arithmetic(args[0])
    except ArithmeticRefused as err:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"!!python/object/apply:eval is computed by a restricted arithmetic evaluator and "
            f"{err}",
            node.start_mark,
        ) from None


class ConfigYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that computes ``!!python/object/apply:eval`` arithmetic safely."""


ConfigYamlLoader.add_constructor(EVAL_TAG, _construct_eval)
