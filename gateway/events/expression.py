"""The small, safe expression language of `filter` stages and `convert` field mappings.

    event.kind == 'buy' and event.amount > 0
    lower(event.country) in ['de', 'fr'] and len(event.items) >= 2
    event['user-id'] != None and source == 'web'

Text is parsed with Python's `ast` module and accepted only if every node is on a short whitelist: literals (str,
int, float, bool, None; bounded size), lists/tuples of those for `in`, the names `event` (the event's data
mapping) and `source` (the event's source name), attribute and constant-subscript access on values, `not`/`and`/
`or`, comparisons (`== != < <= > >= in not in`), `+ - * / // %` and unary minus, and calls of a few named functions
(FUNCTIONS below). Names starting with `_` are refused wherever they appear. The accepted tree is compiled into nested
closures: nothing is ever passed to `eval`/`exec`/`compile`, and evaluation can only read the event.

Limits keep a hostile expression cheap: text length, node count and nesting depth are bounded, and arithmetic is on
numbers only (strings may be concatenated with `+`, never repeated with `*`). A parse error names the column; an
evaluation error (a missing field, comparing a string to a number) raises `EvaluationError`, which stages turn into
a dead-letter reason.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["ExpressionError", "EvaluationError", "Expression", "compile_expression", "FUNCTIONS"]

MAX_TEXT = 2000  # characters of expression text
MAX_NODES = 256  # AST nodes after parsing
MAX_DEPTH = 24  # nesting depth of the AST
MAX_STR_LITERAL = 1000  # characters in one string literal
MAX_INT_LITERAL = 2**63  # absolute value of an integer literal
MAX_COLLECTION = 256  # elements in one list/tuple literal


class ExpressionError(ValueError):
    """The expression text is not in the language. `column` is 1-based (0 when unknown)."""

    def __init__(self, message: str, column: int = 0) -> None:
        super().__init__(f"column {column}: {message}" if column else message)
        self.column = column
        self.reason = message


class EvaluationError(ValueError):
    """The expression could not be evaluated on this event (missing field, mismatched types)."""


_Fn = Callable[[Any, str], Any]  # compiled node: (event data, source name) -> value

_MISSING = object()


def _string_only(name: str, fn: Callable[[str], Any]) -> Callable[[Any], Any]:
    def call(value):
        if not isinstance(value, str):
            raise EvaluationError(f"{name}() needs a string, got {type(value).__name__}")
        return fn(value)
    return call


def _len(value):
    if not isinstance(value, (str, list, tuple, dict)):
        raise EvaluationError(f"len() needs a string, list or mapping, got {type(value).__name__}")
    return len(value)


def _number(name: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def call(value):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise EvaluationError(f"{name}() needs a number or string, got {type(value).__name__}")
        if isinstance(value, str) and len(value) > 100:
            raise EvaluationError(f"{name}() of a string longer than 100 characters")
        try:
            return fn(value)
        except (ValueError, OverflowError) as exc:
            raise EvaluationError(f"{name}(): {exc}") from None
    return call


def _abs(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvaluationError(f"abs() needs a number, got {type(value).__name__}")
    return abs(value)


FUNCTIONS: dict[str, tuple[Callable[[Any], Any], int]] = {  # name -> (function, number of arguments)
    "len": (_len, 1),
    "lower": (_string_only("lower", str.lower), 1),
    "upper": (_string_only("upper", str.upper), 1),
    "strip": (_string_only("strip", str.strip), 1),
    "abs": (_abs, 1),
    "int": (_number("int", int), 1),
    "float": (_number("float", float), 1),
    "str": (lambda v: v if isinstance(v, str) else _number("str", str)(v), 1),
}

_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_ARITH = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Expression:
    """A compiled expression: call `evaluate(data, source)`; `text` is what it was compiled from."""

    text: str
    _fn: _Fn

    def evaluate(self, data: Any, source: str = "") -> Any:
        try:
            return self._fn(data, source)
        except EvaluationError:
            raise
        except (TypeError, ZeroDivisionError, OverflowError, ValueError) as exc:
            raise EvaluationError(str(exc)) from None

    def holds(self, data: Any, source: str = "") -> bool:
        """The value as a predicate (Python truthiness)."""
        return bool(self.evaluate(data, source))


class _Compiler:
    def __init__(self) -> None:
        self.nodes = 0

    def fail(self, node: ast.AST, message: str):
        raise ExpressionError(message, getattr(node, "col_offset", -1) + 1)

    def compile(self, node: ast.AST, depth: int = 0) -> _Fn:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.fail(node, f"expression too large (more than {MAX_NODES} nodes)")
        if depth > MAX_DEPTH:
            self.fail(node, f"expression nested too deeply (more than {MAX_DEPTH} levels)")
        method = getattr(self, "_" + type(node).__name__.lower(), None)
        if method is None:
            self.fail(node, f"{type(node).__name__} is not allowed in an expression")
        return method(node, depth + 1)

    def _constant(self, node: ast.Constant, depth: int) -> _Fn:
        value = node.value
        if value is not None and not isinstance(value, (str, int, float, bool)):
            self.fail(node, f"literal of type {type(value).__name__} is not allowed")
        if isinstance(value, str) and len(value) > MAX_STR_LITERAL:
            self.fail(node, f"string literal longer than {MAX_STR_LITERAL} characters")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_LITERAL:
            self.fail(node, "integer literal too large")
        return lambda data, source: value

    def _name(self, node: ast.Name, depth: int) -> _Fn:
        if node.id == "event":
            return lambda data, source: data
        if node.id == "source":
            return lambda data, source: source
        self.fail(node, f"unknown name {node.id!r} (use event.<field>, event['<field>'] or source)")

    def _field(self, node: ast.AST, base: _Fn, key: Any) -> _Fn:
        def get(data, source):
            container = base(data, source)
            if isinstance(container, dict):
                value = container.get(key, _MISSING)
            elif isinstance(container, list) and isinstance(key, int) and -len(container) <= key < len(container):
                value = container[key]
            else:
                value = _MISSING
            if value is _MISSING:
                raise EvaluationError(f"missing field {key!r}")
            return value
        return get

    def _attribute(self, node: ast.Attribute, depth: int) -> _Fn:
        if node.attr.startswith("_"):
            self.fail(node, f"attribute {node.attr!r}: names starting with '_' are not allowed")
        return self._field(node, self.compile(node.value, depth), node.attr)

    def _subscript(self, node: ast.Subscript, depth: int) -> _Fn:
        key = node.slice
        if (isinstance(key, ast.UnaryOp) and isinstance(key.op, ast.USub) and isinstance(key.operand, ast.Constant)
                and type(key.operand.value) is int):
            key = ast.Constant(-key.operand.value, col_offset=key.col_offset)  # event.items[-1]
        if not isinstance(key, ast.Constant) or isinstance(key.value, bool) or not isinstance(key.value, (str, int)):
            self.fail(node, "subscripts must be a string or integer literal, e.g. event['user-id']")
        if isinstance(key.value, str) and key.value.startswith("_"):
            self.fail(key, f"field {key.value!r}: names starting with '_' are not allowed")
        self._constant(key, depth)
        return self._field(node, self.compile(node.value, depth), key.value)

    def _list(self, node: ast.List | ast.Tuple, depth: int) -> _Fn:
        if len(node.elts) > MAX_COLLECTION:
            self.fail(node, f"list literal longer than {MAX_COLLECTION} elements")
        parts = [self.compile(elt, depth) for elt in node.elts]
        return lambda data, source: [p(data, source) for p in parts]

    _tuple = _list

    def _boolop(self, node: ast.BoolOp, depth: int) -> _Fn:
        parts = [self.compile(v, depth) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda data, source: all(p(data, source) for p in parts)
        return lambda data, source: any(p(data, source) for p in parts)

    def _unaryop(self, node: ast.UnaryOp, depth: int) -> _Fn:
        operand = self.compile(node.operand, depth)
        if isinstance(node.op, ast.Not):
            return lambda data, source: not operand(data, source)
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            sign = -1 if isinstance(node.op, ast.USub) else 1

            def signed(data, source):
                value = operand(data, source)
                if not _is_number(value):
                    raise EvaluationError(f"unary minus/plus needs a number, got {type(value).__name__}")
                return sign * value
            return signed
        self.fail(node, f"operator {type(node.op).__name__} is not allowed")

    def _binop(self, node: ast.BinOp, depth: int) -> _Fn:
        op = _ARITH.get(type(node.op))
        if op is None:
            self.fail(node, f"operator {type(node.op).__name__} is not allowed (use + - * / // %)")
        left, right = self.compile(node.left, depth), self.compile(node.right, depth)
        strings_ok = isinstance(node.op, ast.Add)

        def arith(data, source):
            a, b = left(data, source), right(data, source)
            if _is_number(a) and _is_number(b):
                return op(a, b)
            if strings_ok and isinstance(a, str) and isinstance(b, str):
                return a + b
            raise EvaluationError(f"arithmetic on {type(a).__name__} and {type(b).__name__}")
        return arith

    def _compare(self, node: ast.Compare, depth: int) -> _Fn:
        first = self.compile(node.left, depth)
        steps = []
        for op, right in zip(node.ops, node.comparators, strict=True):
            fn = _COMPARE.get(type(op))
            if fn is None:
                self.fail(node, f"comparison {type(op).__name__} is not allowed")
            steps.append((fn, self.compile(right, depth), isinstance(op, (ast.In, ast.NotIn))))

        def compare(data, source):
            a = first(data, source)
            for fn, right, membership in steps:
                b = right(data, source)
                if membership and not isinstance(b, (str, list, dict)):
                    raise EvaluationError(f"'in' needs a string, list or mapping on the right, got {type(b).__name__}")
                if membership and isinstance(b, str) and not isinstance(a, str):
                    raise EvaluationError("'in' a string needs a string on the left")
                if not fn(a, b):
                    return False
                a = b
            return True
        return compare

    def _call(self, node: ast.Call, depth: int) -> _Fn:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            self.fail(node, f"only these functions may be called: {', '.join(sorted(FUNCTIONS))}")
        fn, arity = FUNCTIONS[node.func.id]
        if node.keywords or len(node.args) != arity or any(isinstance(a, ast.Starred) for a in node.args):
            self.fail(node, f"{node.func.id}() takes exactly {arity} positional argument(s)")
        arg = self.compile(node.args[0], depth)
        return lambda data, source: fn(arg(data, source))


def compile_expression(text: str) -> Expression:
    """Parse and compile `text`; raise ExpressionError naming the column of the first offending part."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ExpressionError("the expression is empty")
    if len(text) > MAX_TEXT:
        raise ExpressionError(f"expression longer than {MAX_TEXT} characters")
    body = text.strip()
    lead = len(text) - len(text.lstrip())  # columns are reported against the text as written
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error: {exc.msg}", (exc.offset or len(body) + 1) + lead) from None
    except (RecursionError, MemoryError, ValueError) as exc:  # pathological nesting; int digits limit
        raise ExpressionError(f"cannot parse: {type(exc).__name__}: {exc}"[:200]) from None
    try:
        fn = _Compiler().compile(tree.body)
    except ExpressionError as exc:
        raise ExpressionError(exc.reason, exc.column + lead if exc.column else 0) from None
    except RecursionError:
        raise ExpressionError(f"expression nested too deeply (more than {MAX_DEPTH} levels)") from None
    return Expression(text=text, _fn=fn)
