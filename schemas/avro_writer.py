"""Avro binary writers compiled from a schema, byte for byte what fastavro's ``schemaless_writer`` writes.

``compile_writer(schema)`` generates Python source specialised to the schema (records inlined; a
function per union branch and per recursive type) that appends a record's encoding to a
``bytearray``: ≈ 3× faster than fastavro for our records. It follows fastavro's compiled writer also
where that is lenient: a missing field takes its default (None when the type includes null), values
of float/double fields go through ``float()``, a long or int field takes any number ``int()``
accepts (truncating floats, no 32-bit range check for int), booleans are written by truthiness,
keys that are not fields are ignored.

Unions take the branch fastavro would: an exact ``None``/``str``/``bool``/``int``/``float``/``bytes``
value goes straight to the branch fastavro's validation picks first for it; anything else (a dict for
a record branch, a tuple naming the branch, a datetime...) is decided by fastavro's own validator.

Logical types: timestamp-millis and timestamp-micros are written as longs (a non-int value goes
through fastavro's conversion); a schema with another logical type that fastavro converts (decimal,
uuid, date, time...) gets fastavro's writer instead, as does one this module cannot compile.
A value that does not fit its type raises TypeError, ValueError, OverflowError, AttributeError or
``struct.error`` (fastavro's writer, when it is the one, KeyError too): a caller that must report a
bad record catches those.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Callable
from typing import Any

from fastavro import parse_schema, schemaless_writer
from fastavro.const import NAMED_TYPES
from fastavro.logical_writers import LOGICAL_WRITERS
from fastavro.schema import extract_logical_type, extract_record_type

try:  # private: how fastavro's writer picks a union branch; without it unions are left to fastavro
    from fastavro.validation import _validate
except ImportError:  # pragma: no cover - a fastavro that moved it
    _validate = None

__all__ = ["COMPILED_LOGICAL_TYPES", "UnsupportedSchemaError", "Writer", "compile_writer"]

Writer = Callable[[bytearray, Any], None]

# Logical types whose values the compiled code writes itself (their base type is long).
COMPILED_LOGICAL_TYPES = frozenset({"long-timestamp-millis", "long-timestamp-micros"})

_TABLE_SIZE = 1 << 14  # varints of 0 .. 16383: one or two bytes
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_MISSING = object()
# What schemaless_writer passes fastavro's validator when it picks a union branch.
_OPTIONS = {"strict": False, "strict_allow_default": False, "disable_tuple_notation": False}


class UnsupportedSchemaError(ValueError):
    """The schema needs something the compiled writer does not do (fastavro's writer does it)."""


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINT: tuple[bytes, ...] = tuple(
    bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7)) for n in range(_TABLE_SIZE)
)
# A length n is written as the long n, i.e. the varint of its zigzag 2n.
_LENGTH: tuple[bytes, ...] = _VARINT[::2]
# 14 low bits of a longer varint: two bytes, both flagged "more follows" (timestamps take three rounds).
_CONTINUED: tuple[bytes, ...] = tuple(bytes(((n & 0x7F) | 0x80, (n >> 7) | 0x80)) for n in range(_TABLE_SIZE))


def _varint(n: int) -> bytes:
    """The varint of an already zigzagged long; OverflowError beyond 64 bits (as fastavro)."""
    if n < _TABLE_SIZE:
        return _VARINT[n]
    if n >> 64:
        raise OverflowError("Python int too large to convert to C long")
    out = b""
    while n >= _TABLE_SIZE:
        out += _CONTINUED[n & 0x3FFF]
        n >>= 14
    return out + _VARINT[n]


def _to_long(value: Any) -> int:
    """What fastavro's C conversion to a 64-bit int accepts: ints, and numbers with ``__int__``."""
    if isinstance(value, int):
        return value
    kind = type(value)
    if isinstance(value, str | bytes | bytearray) or not (
        hasattr(kind, "__int__") or hasattr(kind, "__index__")
    ):
        raise TypeError(f"an integer is required, got {kind.__name__}")
    return int(value)


def _pack_float(value: Any) -> bytes:
    try:
        return _FLOAT.pack(value)
    except OverflowError:
        # fastavro casts to a C float, which turns a finite double beyond the float range into ±inf
        return _FLOAT.pack(math.copysign(math.inf, value))


def _as_bytes(value: Any) -> bytes | bytearray:
    """Bytes of a bytes-like value of unsigned chars (what fastavro's bytes writer accepts)."""
    if isinstance(value, bytes | bytearray):
        return value
    view = memoryview(value)  # TypeError for str, None...
    if view.ndim != 1 or view.format not in ("B", "c"):
        raise ValueError(f"Buffer dtype mismatch, expected 'const unsigned char' but got {view.format!r}")
    return view.tobytes()


def _check_fixed(value: Any, size: int) -> None:
    if len(value) != size:
        raise ValueError(f"data of length {len(value)} does not match fixed size {size}")


_HELPERS: dict[str, Any] = {
    "_V": _VARINT,
    "_L": _LENGTH,
    "_varint": _varint,
    "_to_long": _to_long,
    "_pack_double": _DOUBLE.pack,
    "_pack_float": _pack_float,
    "_as_bytes": _as_bytes,
    "_check_fixed": _check_fixed,
    "_MISSING": _MISSING,
}


def compile_writer(schema: Any, *, fallback: bool = True) -> Writer:
    """A function ``write(buf, record)`` appending the Avro binary encoding of ``record`` to ``buf``.

    ``schema`` may be parsed by fastavro or not. For a schema the compiler does not handle, the
    writer is fastavro's ``schemaless_writer`` if ``fallback``, else ``UnsupportedSchemaError``.
    """
    named: dict[str, Any] = {}
    parsed = parse_schema(schema, named)
    try:
        return _Compiler(named).compile(parsed)
    except UnsupportedSchemaError:
        if not fallback:
            raise
        return _fastavro_writer(parsed)


def _fastavro_writer(parsed: Any) -> Writer:
    def write(buf: bytearray, record: Any) -> None:
        out = io.BytesIO()
        schemaless_writer(out, parsed, record)
        buf.extend(out.getvalue())

    write.__doc__ = "fastavro's schemaless_writer (the schema is not compiled)."
    return write


def _union_selector(branches: list[Any], named: dict[str, Any]) -> Callable[[Any], tuple[int, Any]]:
    """fastavro's choice of a union branch for a value: (branch index, value to write)."""
    resolved = [named.get(b, b) if isinstance(b, str) else b for b in branches]
    kinds = [extract_record_type(b) for b in resolved]
    names = []
    for candidate in branches:
        kind = extract_record_type(candidate)
        names.append(candidate["name"] if kind in NAMED_TYPES else kind)
    field_names = [
        {f["name"] for f in b["fields"]} if k == "record" else None
        for b, k in zip(resolved, kinds, strict=True)
    ]

    def select(datum: Any) -> tuple[int, Any]:
        if isinstance(datum, tuple):  # fastavro's (branch name, value) notation
            name, datum = datum
            for index, branch_name in enumerate(names):
                if name == branch_name:
                    return index, datum
            raise ValueError(f"provided union type name {name} not found in schema {branches}")
        best, most_fields, could_be_float = -1, -1, False
        for index, candidate in enumerate(branches):
            if could_be_float:  # fastavro prefers a later double to a float
                if extract_record_type(candidate) == "double":
                    return index, datum
                continue
            if _validate(datum, candidate, named, field="", raise_errors=False, options=_OPTIONS):
                fields = field_names[index]
                if fields is not None:  # records: the one sharing most fields with the value
                    shared = len(fields.intersection(datum))
                    if shared > most_fields:
                        best, most_fields = index, shared
                elif kinds[index] == "float":
                    best, could_be_float = index, True
                else:
                    return index, datum
        if best == -1:
            raise ValueError(f"{datum!r} (type {type(datum)}) do not match {branches}")
        return best, datum

    return select


class _Compiler:
    """Generates the source of the writer functions of one parsed schema and executes it."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.namespace: dict[str, Any] = dict(_HELPERS)
        self.sources: list[str] = []
        self.tail: list[str] = []  # assignments run after all functions are defined
        self.functions: dict[Any, str] = {}
        self.count = 0

    def compile(self, parsed: Any) -> Writer:
        root = self.function(parsed)
        label = parsed.get("name", "schema") if isinstance(parsed, dict) else "schema"
        source = "\n\n".join(self.sources) + "\n" + "\n".join(self.tail) + "\n"
        exec(compile(source, f"<avro writer {label}>", "exec"), self.namespace)
        writer: Writer = self.namespace[root]
        writer.__doc__ = f"Append the Avro binary encoding of a {label} to a bytearray."
        return writer

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value: Any, prefix: str = "_c") -> str:
        name = self.fresh(prefix)
        self.namespace[name] = value
        return name

    def resolve(self, schema: Any) -> Any:
        return self.named.get(schema, schema) if isinstance(schema, str) else schema

    def function(self, schema: Any) -> str:
        """The name of a generated ``f(buf, x)`` writing a value of ``schema`` (one per named type)."""
        target = self.resolve(schema)
        key: Any = target if isinstance(target, str) else id(target)
        if isinstance(target, dict) and extract_record_type(target) in NAMED_TYPES:
            key = target["name"]
        name = self.functions.get(key)
        if name is None:
            name = self.functions[key] = self.fresh("_write")
            lines: list[str] = []
            self.emit(target, "x", lines, 1, ())
            if not lines:
                lines.append("    pass")
            if any("app(" in line for line in lines):
                lines.insert(0, "    app = buf.append")
            self.sources.append(f"def {name}(buf, x):\n" + "\n".join(lines))
        return name

    def emit(
        self,
        schema: Any,
        var: str,
        out: list[str],
        depth: int,
        stack: tuple[str, ...],
        known: type | None = None,
    ) -> None:
        """Append lines writing the value in variable ``var``, as fastavro's ``write_data`` does;
        ``known``: the exact class of the value when the code before has checked it.
        """
        ind = "    " * depth
        if isinstance(schema, dict) and known is not int:
            logical = extract_logical_type(schema)
            if logical in LOGICAL_WRITERS:
                if logical not in COMPILED_LOGICAL_TYPES:
                    raise UnsupportedSchemaError(f"logical type {logical}")
                prepare = self.const(LOGICAL_WRITERS[logical], "_prepare")
                node = self.const(schema, "_schema")
                out.append(f"{ind}if {var}.__class__ is not int:")
                out.append(f"{ind}    {var} = {prepare}({var}, {node})")
        kind = extract_record_type(schema)
        if not isinstance(kind, str):
            raise UnsupportedSchemaError(f"type {kind!r}")
        if kind == "null":
            pass
        elif kind == "boolean":
            out.append(f"{ind}app(1 if {var} else 0)")
        elif kind in ("int", "long"):
            if known is not int:
                out.append(f"{ind}if {var}.__class__ is not int:")
                out.append(f"{ind}    {var} = _to_long({var})")
            self.emit_varint(f"({var} << 1) ^ ({var} >> 63)", var, out, ind)
        elif kind == "double":
            out.append(f"{ind}buf += _pack_double({var})")
        elif kind == "float":
            out.append(f"{ind}buf += _pack_float({var})")
        elif kind == "string":
            out.append(f"{ind}{var} = {var}.encode()")
            self.emit_bytes(var, out, ind)
        elif kind == "bytes":
            out.append(f"{ind}if {var}.__class__ is not bytes:")
            out.append(f"{ind}    {var} = _as_bytes({var})")
            self.emit_bytes(var, out, ind)
        elif kind == "fixed":
            out.append(f"{ind}_check_fixed({var}, {int(schema['size'])})")
            out.append(f"{ind}buf += {var}")
        elif kind == "enum":
            symbols = self.const(list(schema["symbols"]), "_symbols")
            out.append(f"{ind}buf += _varint({symbols}.index({var}) << 1)")
        elif kind == "array":
            self.emit_array(schema, var, out, depth, stack)
        elif kind == "map":
            self.emit_map(schema, var, out, depth, stack)
        elif kind in ("record", "error"):
            self.emit_record(schema, var, out, depth, stack)
        elif kind in ("union", "error_union"):
            self.emit_union(schema, var, out, depth, stack)
        elif kind in self.named:
            target = self.named[kind]
            if kind in stack:  # a recursive reference: call the type's function
                out.append(f"{ind}{self.function(target)}(buf, {var})")
            else:
                self.emit(target, var, out, depth, stack, known)
        else:
            raise UnsupportedSchemaError(f"unknown type {kind!r}")

    def emit_varint(self, value: str, var: str, out: list[str], ind: str) -> None:
        out.append(f"{ind}{var} = {value}")
        out.append(f"{ind}buf += _V[{var}] if {var} < {_TABLE_SIZE} else _varint({var})")

    def emit_length(self, length: str, out: list[str], ind: str) -> None:
        out.append(f"{ind}buf += _L[{length}] if {length} < {len(_LENGTH)} else _varint({length} << 1)")

    def emit_bytes(self, var: str, out: list[str], ind: str) -> None:
        size = self.fresh("n")
        out.append(f"{ind}{size} = len({var})")
        self.emit_length(size, out, ind)
        out.append(f"{ind}buf += {var}")

    def emit_array(self, schema: Any, var: str, out: list[str], depth: int, stack: tuple[str, ...]) -> None:
        ind = "    " * depth
        item, size = self.fresh("item"), self.fresh("n")
        out.append(f"{ind}if {var}.__class__ is not list:")
        out.append(f"{ind}    {var} = list({var})")
        out.append(f"{ind}{size} = len({var})")
        out.append(f"{ind}if {size}:")
        self.emit_length(size, out, ind + "    ")
        out.append(f"{ind}    for {item} in {var}:")
        before = len(out)
        self.emit(schema["items"], item, out, depth + 2, stack)
        if len(out) == before:  # items of type null
            out.append(f"{ind}        pass")
        out.append(f"{ind}app(0)")

    def emit_map(self, schema: Any, var: str, out: list[str], depth: int, stack: tuple[str, ...]) -> None:
        ind = "    " * depth
        key, value, size = self.fresh("key"), self.fresh("value"), self.fresh("n")
        out.append(f"{ind}{size} = len({var})")
        out.append(f"{ind}if {size}:")
        self.emit_length(size, out, ind + "    ")
        out.append(f"{ind}    for {key}, {value} in {var}.items():")
        self.emit("string", key, out, depth + 2, stack)
        self.emit(schema["values"], value, out, depth + 2, stack)
        out.append(f"{ind}app(0)")

    def emit_record(self, schema: Any, var: str, out: list[str], depth: int, stack: tuple[str, ...]) -> None:
        ind = "    " * depth
        stack = (*stack, schema["name"])
        get = self.fresh("get")
        out.append(f"{ind}{get} = {var}.get")
        for field in schema["fields"]:
            name, field_type = field["name"], field["type"]
            value = self.fresh("v")
            # The same test as fastavro's write_record, "null" in a type name included.
            if "default" in field or "null" in field_type:
                default = field.get("default")
                fill = "None" if default is None else self.const(default, "_default")
                out.append(f"{ind}{value} = {get}({name!r}, {fill})")
            else:
                out.append(f"{ind}{value} = {get}({name!r}, _MISSING)")
                out.append(f"{ind}if {value} is _MISSING:")
                out.append(f"{ind}    raise ValueError({f'no value and no default for {name}'!r})")
            if field_type == "float" or field_type == "double":
                out.append(f"{ind}if {value}.__class__ is not float:")
                out.append(f"{ind}    {value} = float({value})")
            self.emit(field_type, value, out, depth, stack)

    def emit_union(
        self, schema: list[Any], var: str, out: list[str], depth: int, stack: tuple[str, ...]
    ) -> None:
        if _validate is None:
            raise UnsupportedSchemaError("unions need fastavro.validation._validate")
        ind = "    " * depth
        kinds = [extract_record_type(self.resolve(b)) for b in schema]

        def first(*accepting: str) -> int | None:
            return next((i for i, kind in enumerate(kinds) if kind in accepting), None)

        def prefer_double(index: int) -> int:
            if kinds[index] == "float":
                return next((i for i in range(index + 1, len(kinds)) if kinds[i] == "double"), index)
            return index

        # (test, branch) for values of an exact class whose branch is the first one fastavro's
        # validation accepts them in (None: null; str: string unless an enum comes first; ...).
        cases: list[tuple[str, int, type]] = []
        if (index := first("null")) is not None:
            cases.append((f"{var} is None", index, type(None)))
        if (index := first("string", "enum")) is not None and kinds[index] == "string":
            cases.append((f"{var}.__class__ is str", index, str))
        if (index := first("boolean")) is not None:
            cases.append((f"{var}.__class__ is bool", index, bool))
        if (index := first("int", "long", "float", "double")) is not None:
            test = f"{var}.__class__ is int"
            if kinds[index] == "int":
                test += f" and {_INT_MIN} <= {var} <= {_INT_MAX}"
            elif kinds[index] == "long":
                test += f" and {_LONG_MIN} <= {var} <= {_LONG_MAX}"
            cases.append((test, prefer_double(index), int))
        if (index := first("float", "double")) is not None:
            cases.append((f"{var}.__class__ is float", prefer_double(index), float))
        if (index := first("bytes", "fixed", "array")) is not None and kinds[index] == "bytes":
            cases.append((f"{var}.__class__ is bytes", index, bytes))

        keyword = "if"
        for test, index, known in cases:
            out.append(f"{ind}{keyword} {test}:")
            out.append(f"{ind}    buf += {_VARINT[index << 1]!r}")
            self.emit(schema[index], var, out, depth + 1, stack, known)
            keyword = "elif"
        if cases:
            out.append(f"{ind}else:")
            ind += "    "
        select = self.const(_union_selector(schema, self.named), "_select")
        branches = self.fresh("_branches")
        self.tail.append(f"{branches} = ({''.join(self.function(b) + ', ' for b in schema)})")
        index_var = self.fresh("index")
        out.append(f"{ind}{index_var}, {var} = {select}({var})")
        out.append(f"{ind}buf += _varint({index_var} << 1)")
        out.append(f"{ind}{branches}[{index_var}](buf, {var})")
