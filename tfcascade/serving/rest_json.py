"""TF Serving's REST JSON conventions for ``:predict``, as pure functions (numpy + json, no TF).

Written from tensorflow/serving at 9d981c5c (``tensorflow_serving/util/json_tensor.cc``,
``model_servers/http_rest_api_handler.cc``, ``model_servers/http_server.cc``,
``g3doc/api_rest.md``); ``tests/serving/data/tf_serving_json_vectors.json`` holds the cases.

- Requests: ``{"signature_name": s, "instances": [...]}`` (rows: one object per row, or bare
  values when the signature has one input) or ``{"signature_name": s, "inputs": {...}}``
  (columnar: one value per input, or a bare value when the signature has one input).
- Responses: rows ``{"predictions": [...]}`` (one object per row, bare values when there is
  one output), columnar ``{"outputs": {...}}`` (a bare value when there is one output). Floats
  are written as TF Serving writes them: six significant digits when that round-trips, else
  9 (float) / 17 (double), ``.0`` added to whole numbers, and ``NaN``, ``Infinity``,
  ``-Infinity`` for the non-finite ones.
- Errors: ``{"error": "<message>"}``; :data:`HTTP_STATUS` maps status codes to HTTP.
- Types: an int64 input takes JSON integers only (``1.0`` and ``1.5`` are rejected alike);
  float inputs take any number; every input of the signature must be present (TF Serving's
  REST decoder uses ``SignatureDef.inputs`` and does not apply ``SignatureDef.defaults``);
  in the rows format an unknown name is rejected, in the columnar format it is ignored.

Where TF Serving's order is a protobuf map's (unspecified), names are taken sorted.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
FORMATS = ("columnar", "rows")

# tensorflow_serving/model_servers/http_server.cc ToHTTPStatusCode.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
    "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}
_CODE_FOR_HTTP = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                  501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}

# Canonical dtype name -> TensorFlow's DataTypeString (what TF Serving's messages print).
_TF_NAMES = {
    "float32": "float", "float64": "double", "float16": "half", "bfloat16": "bfloat16",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64", "uint8": "uint8",
    "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool", "string": "string",
    "complex64": "complex64", "complex128": "complex128",
}
_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "str": "string", "bytes": "string",
            "bytes_": "string", "str_": "string", "object": "string", "object_": "string", "bool_": "bool"}
# dtype -> (accepted integer range) for the integer types TF Serving decodes (RapidJSON IsInt,
# IsInt64, IsUint, IsUint64).
_INT_RANGES = {
    "int8": (-(2**31), 2**31 - 1), "int16": (-(2**31), 2**31 - 1), "int32": (-(2**31), 2**31 - 1),
    "uint8": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1), "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_DECODABLE = set(_INT_RANGES) | {"float32", "float64", "bool", "string"}

Spec = Any  # (dtype, shape) tuple, {"dtype", "shape"} dict, or anything with .dtype / .shape
SpecSource = Mapping[str, Spec] | Callable[[str], Mapping[str, Spec]]
DefaultSource = Collection[str] | Callable[[str], Collection[str]]


class RestError(Exception):
    """A request TF Serving would refuse: ``status`` (HTTP) and TF Serving's ``message``."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.code = code or _CODE_FOR_HTTP.get(self.status, "UNKNOWN")


def _invalid(message: str) -> RestError:
    return RestError(400, message, "INVALID_ARGUMENT")


# ----------------------------------------------------------------------------------------------
# dtypes


def dtype_name(dtype: Any) -> str:
    """Canonical dtype name ("int64", "float32", "string", ...) of a string, numpy or TF dtype.

    Args:
      dtype: e.g. ``"int64"``, ``np.float32``, ``tf.string``, ``"double"``.

    Returns:
      One of the keys of TensorFlow's dtype table, spelled the numpy way (``"string"`` for
      TF strings).
    """
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):
        if isinstance(dtype, str):
            name = dtype
        else:
            try:
                name = np.dtype(dtype).name
            except TypeError as err:
                raise ValueError(f"unknown dtype {dtype!r}") from err
    name = _ALIASES.get(name.lower(), name.lower())
    if name.startswith(("bytes", "str", "<u", "|s")):
        name = "string"
    if name not in _TF_NAMES:
        raise ValueError(f"unknown dtype {dtype!r}")
    return name


def _numpy_dtype(name: str) -> np.dtype:
    return np.dtype(object) if name == "string" else np.dtype(name)


def _spec_dtype(spec: Spec) -> str:
    if isinstance(spec, Mapping):
        return dtype_name(spec["dtype"])
    if isinstance(spec, tuple | list):
        return dtype_name(spec[0])
    if hasattr(spec, "dtype"):
        return dtype_name(spec.dtype)
    return dtype_name(spec)


# ----------------------------------------------------------------------------------------------
# RapidJSON PrettyWriter emulation (TF Serving writes every response with it).


class _Writer:
    """Mimics rapidjson::PrettyWriter (4-space indent) or, with pretty=False, compact JSON.

    ``single_line`` is rapidjson's kFormatSingleLineArray, toggled mid-document as TF Serving
    does. ``limit`` mimics json_tensor.cc's JsonWriterWithLimit: every event after the output
    reached ``limit`` bytes fails.
    """

    def __init__(self, pretty: bool = True, single_line: bool = False, limit: int | None = None):
        self.parts: list[str] = []
        self.size = 0
        self.levels: list[list] = []  # [in_array, value_count]
        self.pretty, self.single_line, self.limit = pretty, single_line, limit

    def text(self) -> str:
        return "".join(self.parts)

    def _put(self, s: str) -> None:
        self.parts.append(s)
        self.size += len(s.encode("utf-8", "surrogateescape"))

    def _ok(self) -> bool:
        return self.limit is None or self.size < self.limit

    def _prefix(self) -> None:
        if not self.levels:
            return
        level = self.levels[-1]
        indent = " " * (4 * len(self.levels))
        if not self.pretty:
            if level[1] > 0:
                self._put("," if level[0] or level[1] % 2 == 0 else ":")
        elif level[0]:
            if level[1] > 0:
                self._put(", " if self.single_line else ",")
            if not self.single_line:
                self._put("\n" + indent)
        else:
            if level[1] > 0:
                self._put(",\n" if level[1] % 2 == 0 else ": ")
            else:
                self._put("\n")
            if level[1] % 2 == 0:
                self._put(indent)
        level[1] += 1

    def raw(self, token: str) -> bool:
        if not self._ok():
            return False
        self._prefix()
        self._put(token)
        return True

    def string(self, s: str) -> bool:
        return self.raw(json.dumps(s, ensure_ascii=False))

    def start(self, in_array: bool) -> bool:
        if not self._ok():
            return False
        self._prefix()
        self._put("[" if in_array else "{")
        self.levels.append([in_array, 0])
        return True

    def end(self) -> bool:
        if not self._ok():
            return False
        in_array, count = self.levels.pop()
        if self.pretty and count and not (in_array and self.single_line):
            self._put("\n" + " " * (4 * len(self.levels)))
        self._put("]" if in_array else "}")
        return True


def _rapidjson_double(d: float) -> str:
    """RapidJSON Writer::Double of a finite double (Grisu shortest digits, its Prettify)."""
    if d == 0:
        return "-0.0" if math.copysign(1.0, d) < 0 else "0.0"
    sign = "-" if d < 0 else ""
    mantissa, _, exponent = repr(abs(d)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    k = (int(exponent) if exponent else 0) - len(fraction)
    while digits.endswith("0"):
        digits, k = digits[:-1], k + 1
    length = len(digits)
    kk = length + k

    def exp(e: int) -> str:
        return f"e{e}"  # RapidJSON writes no '+' and no leading zeros

    if 0 <= k and kk <= 21:
        return sign + digits + "0" * k + ".0"
    if 0 < kk <= 21:
        return sign + digits[:kk] + "." + digits[kk:]
    if -6 < kk <= 0:
        return sign + "0." + "0" * (-kk) + digits
    if kk < -324:
        return sign + "0.0"
    if length == 1:
        return sign + digits + exp(kk - 1)
    return sign + digits[0] + "." + digits[1:] + exp(kk - 1)


def _emit(writer: _Writer, value: Any) -> bool:
    """Writes a parsed JSON value the way RapidJSON's Value::Accept does; False once stopped."""
    if isinstance(value, dict):
        if not writer.start(False):
            return False
        for key, item in value.items():
            if not writer.string(key) or not _emit(writer, item):
                return False
        return writer.end()
    if isinstance(value, list):
        if not writer.start(True):
            return False
        for item in value:
            if not _emit(writer, item):
                return False
        return writer.end()
    if isinstance(value, str):
        return writer.string(value)
    if value is None or isinstance(value, bool):
        return writer.raw({None: "null", True: "true", False: "false"}[value])
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return writer.raw(str(value))
    try:
        value = float(value)  # RapidJSON holds integers beyond uint64 as doubles
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):  # RapidJSON's Writer refuses NaN/Inf (after the separator)
        if writer._ok():
            writer._prefix()
        return False
    return writer.raw(_rapidjson_double(value))


def _debug(value: Any) -> str:
    """json_tensor.cc JsonValueToDebugString: single-line arrays, cut after 256 bytes."""
    writer = _Writer(pretty=True, single_line=True, limit=256)
    _emit(writer, value)
    return writer.text()


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


# ----------------------------------------------------------------------------------------------
# Parsing (RapidJSON with kParseNanAndInfFlag | kParseStopWhenDoneFlag).

_NONFINITE = re.compile(r'"(?:[^"\\]|\\.)*"|-?(?:Infinity|Inf|NaN)')
_NONFINITE_SPELLING = {"Inf": "Infinity", "-Inf": "-Infinity", "-NaN": "NaN"}


def _first_wins(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        out.setdefault(key, value)  # rapidjson FindMember finds the first of duplicate keys
    return out


class _TooBig(Exception):
    pass


def _parse_float(token: str) -> float:
    value = float(token)
    if math.isinf(value):  # a literal beyond the double range (not the Infinity token)
        raise _TooBig(token)
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_first_wins, parse_float=_parse_float)


def _decode(text: str, start: int) -> Any:
    try:
        return _DECODER.raw_decode(text, start)[0]
    except _TooBig as err:
        raise _invalid("JSON Parse error: Number too big to be stored in double. at offset: "
                       f"{text.find(str(err), start)}") from None
    except RecursionError:
        raise _invalid("JSON Parse error: the document nests deeper than this parser reads "
                       "(TF Serving's iterative parser has no such limit)") from None


def _parse(text: str) -> Any:
    """RapidJSON's reading of ``text``: NaN/Inf/Infinity tokens, content after the value ignored."""
    start = len(text) - len(text.lstrip(" \t\n\r"))
    if start == len(text):
        raise _invalid(f"JSON Parse error: The document is empty. at offset: {start}")
    try:
        return _decode(text, start)
    except json.JSONDecodeError as err:
        # RapidJSON also reads Inf, -Inf and -NaN; Python's json only NaN, Infinity, -Infinity.
        fixed = _NONFINITE.sub(lambda m: _NONFINITE_SPELLING.get(m.group(0), m.group(0)), text)
        if fixed != text:
            try:
                return _decode(fixed, start)
            except json.JSONDecodeError:
                pass
        raise _invalid(f"JSON Parse error: {err.msg} at offset: {err.pos}") from None


def _text(body: str | bytes) -> str:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body).decode("utf-8", "surrogateescape")
    return body


# ----------------------------------------------------------------------------------------------
# Requests


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _dense_shape(value: Any) -> list[int]:
    """json_tensor.cc GetDenseTensorShape: the shape read off the first element at each level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _shape_str(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _b64decode(value: Any) -> bytes:
    if not _is_b64(value):
        raise _invalid(f"JSON Value: {_debug(value)} not formatted correctly for base64 data")
    text = value["b64"].rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("Unable to base64 decode") from None


def _leaf(value: Any, dtype: str) -> Any:
    """json_tensor.cc AddValueToTensor: one JSON scalar as a value of ``dtype``."""
    def type_error() -> RestError:
        return _invalid(f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected "
                        f"type: {_TF_NAMES[dtype]}")

    if dtype not in _DECODABLE:
        raise RestError(501, f"Conversion of JSON Value: {_debug(value)} to type: {_TF_NAMES[dtype]}",
                        "UNIMPLEMENTED")
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in ("float32", "float64"):
        if not is_number:
            raise type_error()
        try:
            return float(value)
        except OverflowError:
            return math.copysign(math.inf, value)
    if dtype == "bool":
        if not isinstance(value, bool):
            raise type_error()
        return value
    if dtype == "string":
        if not isinstance(value, str):
            raise type_error()
        return value.encode("utf-8", "surrogateescape")
    low, high = _INT_RANGES[dtype]
    if not (is_number and isinstance(value, int) and low <= value <= high):
        raise type_error()
    return value


def _fill(value: Any, level: int, shape: list[int], dtype: str, out: list) -> None:
    """json_tensor.cc FillTensorProto: checks ``value`` is dense at ``shape``, collects leaves."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise _invalid(f"JSON Value: {_debug(value)} found at incorrect level: {level + 1} in "
                           f"the JSON DOM. Expected at level: {rank}")
        if isinstance(value, dict):
            if dtype != "string":
                raise _invalid(f"JSON Value: {_debug(value)} Type: Object is not of expected type: "
                               f"{_TF_NAMES[dtype]}")
            out.append(_b64decode(value))
        else:
            out.append(_leaf(value, dtype))
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise _invalid(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                       f"expected size: {shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _array(leaves: list, shape: list[int], dtype: str) -> np.ndarray:
    if dtype == "string":
        out = np.empty(len(leaves), dtype=object)
        out[:] = leaves
        return out.reshape(shape)
    if dtype in ("int8", "int16", "uint8"):  # TF keeps them in int_val and truncates
        return np.array(leaves, dtype=np.int64).astype(dtype).reshape(shape)
    with np.errstate(over="ignore"):
        return np.array(leaves, dtype=_numpy_dtype(dtype)).reshape(shape)


def _tensor(value: Any, dtype: str) -> np.ndarray:
    shape = _dense_shape(value)
    leaves: list = []
    _fill(value, 0, shape, dtype, leaves)
    return _array(leaves, shape, dtype)


def _status_string(err: RestError) -> str:
    return f"{err.code}: {err.message}"  # absl::Status::ToString()


def _rows(doc: dict, specs: dict[str, str], optional: set[str]) -> dict[str, np.ndarray]:
    """json_tensor.cc FillTensorMapFromInstancesList."""
    instances = doc["instances"]
    if not isinstance(instances, list):
        raise _invalid(f"JSON Value: {_debug(doc)} Expecting 'instances' to be an list/array")
    if not instances:
        raise _invalid(f"JSON Value: {_debug(doc)} No values in 'instances' array")
    if not isinstance(instances[0], dict) and len(specs) > 1:
        raise _invalid("instances is a plain list, but expecting list of objects as multiple input "
                       "tensors required as per tensorinfo_map")
    objects = _is_element_object(instances[0])
    names = sorted(specs)
    seen: dict[str, list] = {}  # name -> [shape, size, leaves]
    first_keys: set[str] | None = None

    def add(item: Any, name: str) -> None:
        if name not in specs:
            raise _invalid(f"JSON object: does not have named input: {name}")
        shape = _dense_shape(item)
        leaves: list = []
        _fill(item, 0, shape, specs[name], leaves)
        if name not in seen:
            seen[name] = [shape, len(leaves), leaves]
        elif seen[name][1] != len(leaves):
            raise _invalid(f"Expecting tensor size: {seen[name][1]} but got: {len(leaves)}")
        elif seen[name][0] != shape:
            raise _invalid(f"Expecting shape {_shape_str(seen[name][0])} but got: {_shape_str(shape)}")
        else:
            seen[name][2].extend(leaves)

    for i, element in enumerate(instances):
        if objects:
            if not _is_element_object(element):
                raise _invalid(f"Expecting object but got list at item {i} of input list")
            for name, item in element.items():
                try:
                    add(item, name)
                except RestError as err:
                    raise _invalid(f"Failed to process element: {i} key: {name} of 'instances' list. "
                                   f"Error: {_status_string(err)}") from None
            keys = set(element)
            if first_keys is None:
                first_keys = keys
            # TF Serving: keys == every input. With ``defaults`` an element may leave out
            # defaulted inputs, the same ones in every element.
            if not (set(names) - optional <= keys <= set(names)) or keys != first_keys:
                raise _invalid(f"Failed to process element: {i} of 'instances' list. JSON object: "
                               f"{_debug(element)} keys must be equal to: {','.join(names)}")
        else:
            if _is_element_object(element):
                raise _invalid(f"Expecting value/list but got object at item {i} of input list")
            try:
                add(element, names[0])
            except RestError as err:
                raise _invalid(f"Failed to process element: {i} of 'instances' list. "
                               f"Error: {_status_string(err)}") from None
    return {name: _array(leaves, [len(instances), *shape], specs[name])
            for name, (shape, _, leaves) in seen.items()}


def _columnar(doc: dict, specs: dict[str, str], optional: set[str]) -> dict[str, np.ndarray]:
    """json_tensor.cc FillTensorMapFromInputsMap (names the signature lacks are ignored)."""
    value = doc["inputs"]
    if not isinstance(value, dict) or _is_b64(value):
        if len(specs) > 1:
            raise _invalid("inputs is a plain value/list, but expecting an object as multiple input "
                           "tensors required as per tensorinfo_map")
        (name, dtype), = specs.items()
        return {name: _tensor(value, dtype)}
    out = {}
    for name in sorted(specs):
        if name not in value:
            if name in optional:
                continue
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _tensor(value[name], specs[name])
    return out


def decode_request(body: str | bytes, input_specs: SpecSource, defaults: DefaultSource = ()
                   ) -> tuple[str, dict[str, np.ndarray], str]:
    """Decodes a ``:predict`` request body as TF Serving's REST front end does.

    Args:
      body: the request body.
      input_specs: the signature's inputs, name -> ``(dtype, shape)`` (or a ``tf.TensorSpec``);
        or a function of the signature name returning them, which may raise :class:`RestError`
        (TF Serving looks the model and signature up at that point, after parsing the body and
        its ``signature_name``). Only the dtypes are used: TF Serving's decoder checks no shapes.
      defaults: names of inputs that may be left out (or a function of the signature name
        returning them). TF Serving's REST decoder allows none (it requires every input of
        ``SignatureDef.inputs``, defaulted or not), so leave it empty to behave as TF Serving.

    Returns:
      ``(signature_name, tensors, format)``: the signature (``"serving_default"`` when the body
      names none), name -> array (dtype from the spec; strings as ``bytes`` in object arrays), and
      ``"rows"`` or ``"columnar"``.

    Raises:
      RestError: what TF Serving would answer (status 400 mostly; 501 for dtypes its decoder
        does not support; whatever ``input_specs`` raises).
    """
    doc = _parse(_text(body))
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {_debug(doc)} Is not object")
    signature = doc.get("signature_name", "")
    if not isinstance(signature, str):
        raise _invalid(f"JSON Value: {_debug(doc)} not formatted correctly. 'signature_name' key must "
                       "be a string value.")
    name = signature or DEFAULT_SIGNATURE
    raw = input_specs(name) if callable(input_specs) else input_specs
    specs = {k: _spec_dtype(v) for k, v in raw.items()}
    if not specs:
        raise _invalid(f"Failed to get input map for signature: {signature or 'DEFAULT'}")
    optional = set(defaults(name) if callable(defaults) else defaults)
    if "instances" in doc and "inputs" in doc:
        raise _invalid(f"JSON Value: {_debug(doc)} Not formatted correctly expecting only one of "
                       "'inputs' or 'instances' keys to exist ")
    if "instances" in doc:
        return name, _rows(doc, specs, optional), "rows"
    if "inputs" in doc:
        return name, _columnar(doc, specs, optional), "columnar"
    raise _invalid("Missing 'inputs' or 'instances' key")


def _request_value(array: np.ndarray) -> Any:
    """An array as a JSON-ready nested list (floats as shortest tokens, bytes as b64)."""
    kind = array.dtype.kind
    if kind in "iub":
        return array.tolist()
    if kind == "f":
        width = np.float32 if array.dtype.itemsize <= 4 else np.float64
        flat = [_FloatToken(str(width(v)) if math.isfinite(v) else
                            ("NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")))
                for v in array.ravel().tolist()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    if kind in "OSU":
        def one(v):
            if isinstance(v, bytes | np.bytes_):
                return {"b64": base64.b64encode(bytes(v)).decode("ascii")}
            return str(v)
        out = np.empty(array.shape, dtype=object)
        for index, v in np.ndenumerate(array):
            out[index] = one(v)
        return out.tolist()
    raise ValueError(f"cannot encode dtype {array.dtype} in a TF Serving request")


class _FloatToken(str):
    """A float already spelled as a JSON number token."""


def _dump_compact(value: Any) -> str:
    writer = _Writer(pretty=False)

    def emit(v: Any) -> None:
        if isinstance(v, dict):
            writer.start(False)
            for key, item in v.items():
                writer.string(key)
                emit(item)
            writer.end()
        elif isinstance(v, list):
            writer.start(True)
            for item in v:
                emit(item)
            writer.end()
        elif isinstance(v, _FloatToken):
            writer.raw(str(v))
        else:
            writer.raw(json.dumps(v, ensure_ascii=False))

    emit(value)
    return writer.text()


def encode_request(inputs: Mapping[str, Any], signature_name: str | None = DEFAULT_SIGNATURE,
                   format: str = "columnar") -> str:
    """A ``:predict`` request body in TF Serving's row or columnar format.

    Args:
      inputs: name -> array-like (ints, floats incl. NaN/inf, bools, str, bytes -> ``{"b64"}``).
      signature_name: written as ``signature_name`` (left out when None).
      format: ``"columnar"`` (``{"inputs": {name: value}}``) or ``"rows"``
        (``{"instances": [{name: row}, ...]}``; every input needs the same 0-th dimension >= 1).

    Returns:
      The JSON text (floats as their shortest token, non-finite as NaN/Infinity/-Infinity).

    Raises:
      ValueError: unknown format, no inputs, or inputs the rows format cannot carry.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be 'columnar' or 'rows', got format={format!r}")
    if not inputs:
        raise ValueError("inputs is empty: a TF Serving request needs at least one input")
    arrays = {name: np.asarray(value) for name, value in inputs.items()}
    doc: dict[str, Any] = {} if signature_name is None else {"signature_name": signature_name}
    if format == "columnar":
        doc["inputs"] = {name: _request_value(a) for name, a in arrays.items()}
        return _dump_compact(doc)
    batch, first = None, None
    for name, a in arrays.items():
        if a.ndim == 0:
            raise ValueError(f"input {name} is a scalar: the rows format needs a 0-th (batch) dimension")
        if batch is None:
            batch, first = a.shape[0], name
        elif a.shape[0] != batch:
            raise ValueError(f"the rows format needs every input's 0-th dimension equal: {name} has "
                             f"{a.shape[0]}, {first} has {batch} (use format='columnar')")
    if batch == 0:
        raise ValueError(f"input {first} has 0 rows: TF Serving refuses an empty 'instances' list")
    columns = {name: _request_value(a) for name, a in arrays.items()}
    doc["instances"] = [{name: column[i] for name, column in columns.items()} for i in range(batch)]
    return _dump_compact(doc)


# ----------------------------------------------------------------------------------------------
# Responses


def format_float(value: float, double: bool = False) -> str:
    """A float as TF Serving writes it (json_tensor.cc WriteDecimal).

    Args:
      value: the number.
      double: True for a DT_DOUBLE output (17 digits when 6 do not round-trip), False for
        DT_FLOAT (9 digits).

    Returns:
      ``"%g"`` (six significant digits) when it parses back to ``value``, else ``"%.9g"`` /
      ``"%.17g"``; ``".0"`` appended when there is neither a point nor an exponent; ``NaN``,
      ``Infinity`` or ``-Infinity`` for the non-finite.
    """
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    back = float(text) if double else float(np.float32(float(text)))
    if back != value:
        text = f"{value:.17g}" if double else f"{value:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _write_tensor(writer: _Writer, array: np.ndarray, name: str) -> None:
    """json_tensor.cc AddTensorValues / AddSingleValueAndAdvance."""
    kind = array.dtype.kind
    as_bytes = name.endswith("_bytes")
    if kind == "f" and array.dtype.itemsize in (4, 8):
        double = array.dtype.itemsize == 8

        def one(v):
            writer.raw(format_float(v, double))
    elif kind in "iu" and array.dtype != np.uint16:
        def one(v):
            writer.raw(str(int(v)))
    elif kind == "b":
        def one(v):
            writer.raw("true" if v else "false")
    elif kind in "OSU":
        def one(v):
            if isinstance(v, str):
                v = v.encode("utf-8", "surrogateescape")
            if as_bytes:
                writer.start(False)
                writer.string("b64")
                writer.string(base64.b64encode(bytes(v)).decode("ascii"))
                writer.end()
            else:
                writer.string(bytes(v).decode("utf-8", "replace"))
    else:
        name_ = _TF_NAMES.get(array.dtype.name, array.dtype.name)
        raise _invalid(f"Failed to write JSON value for tensor type: {name_}")

    def rec(a: np.ndarray) -> None:
        if a.ndim == 0:
            one(a.item() if kind != "O" else a[()])
            return
        writer.start(True)
        for sub in a:
            rec(np.asarray(sub, dtype=a.dtype) if kind == "O" else sub)
        writer.end()

    rec(array)


def encode_response(outputs: Mapping[str, Any], format: str = "columnar") -> str:
    """A ``:predict`` response body as TF Serving writes it (json_tensor.cc MakeJsonFromTensors).

    Args:
      outputs: output name -> array (float32/float64, ints, bool, strings; names ending in
        ``_bytes`` are written as ``{"b64": ...}``).
      format: the request's format: ``"rows"`` -> ``{"predictions": [...]}`` (one object per
        row, bare values with one output), ``"columnar"`` -> ``{"outputs": ...}`` (an object,
        a bare value with one output).

    Returns:
      The JSON text, laid out as RapidJSON's PrettyWriter lays it out (names sorted).

    Raises:
      RestError: 400 with TF Serving's message for no outputs, a scalar output or unequal
        0-th dimensions in the rows format, or a dtype TF Serving cannot write.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be 'columnar' or 'rows', got format={format!r}")
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    arrays = {name: np.asarray(outputs[name]) for name in sorted(outputs)}
    several = len(arrays) > 1
    writer = _Writer(pretty=True)
    writer.start(False)
    if format == "columnar":
        writer.string("outputs")
        if several:
            writer.start(False)
        for name, a in arrays.items():
            if several:
                writer.string(name)
            _write_tensor(writer, a, name)
        if several:
            writer.end()
        writer.end()
        return writer.text()
    batch = -1
    for name, a in arrays.items():
        if a.ndim == 0:
            raise _invalid(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and a.shape[0] != batch:
            raise _invalid(f"Tensor name: {name} has inconsistent batch size: {a.shape[0]} "
                           f"expecting: {batch}")
        batch = a.shape[0]
    writer.string("predictions")
    writer.start(True)
    for i in range(batch):
        if several:
            writer.start(False)
        writer.single_line = True
        for name, a in arrays.items():
            if several:
                writer.string(name)
            _write_tensor(writer, a[i] if a.dtype.kind != "O" else np.asarray(a[i], dtype=object), name)
        writer.single_line = False
        if several:
            writer.end()
    writer.end()
    writer.end()
    return writer.text()


def _decode_value(value: Any, dtype: Any = None) -> np.ndarray:
    def convert(v):
        if isinstance(v, list):
            return [convert(x) for x in v]
        if _is_b64(v):
            return base64.b64decode(v["b64"])
        if isinstance(v, dict):
            raise ValueError(f"unexpected JSON object {v!r} in a tensor value")
        return v

    value = convert(value)
    shape = _dense_shape(value)
    leaves: list = []

    def collect(v: Any, level: int) -> None:
        if not isinstance(v, list):
            if level != len(shape):
                raise ValueError(f"ragged tensor value in the response: {_debug(value)}")
            leaves.append(v)
            return
        if level >= len(shape) or len(v) != shape[level]:
            raise ValueError(f"ragged tensor value in the response: {_debug(value)}")
        for x in v:
            collect(x, level + 1)

    collect(value, 0)
    array = np.empty(len(leaves), dtype=object)
    array[:] = leaves
    array = array.reshape(shape)
    if dtype is not None:
        target = _numpy_dtype(dtype_name(dtype))
    else:
        if leaves and all(isinstance(v, bool) for v in leaves):
            target = np.dtype(bool)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in leaves):
            target = np.dtype(np.int64)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in leaves):
            target = np.dtype(np.float64)
        else:
            target = np.dtype(object)
    if target.kind == "O":
        if dtype is not None:  # a TF string tensor: bytes, as over gRPC
            for index, v in np.ndenumerate(array):
                if isinstance(v, str):
                    array[index] = v.encode("utf-8", "surrogateescape")
        return array
    with np.errstate(over="ignore"):
        return array.astype(target)


def decode_response(body: str | bytes, dtypes: Mapping[str, Any] | None = None,
                    single_output_name: str = "output") -> dict[str, np.ndarray]:
    """Parses a TF Serving ``:predict`` response, row or columnar, into arrays.

    Args:
      body: the response body (``NaN``, ``Infinity``, ``-Infinity`` tokens accepted).
      dtypes: output name -> dtype to cast to (``"string"``: bytes in an object array); others
        are inferred (ints -> int64, any float -> float64, bools -> bool, strings -> str and
        b64 -> bytes in an object array).
      single_output_name: the name to give the output when the response holds one unnamed
        output (TF Serving leaves the name out then).

    Returns:
      Output name -> array (rows stacked along a new 0-th dimension).

    Raises:
      ValueError: not a TF Serving response (an ``{"error": ...}`` body included), or rows
        that disagree in names or shapes.
    """
    text = _text(body)
    try:
        doc = _parse(text)
    except RestError as err:
        raise ValueError(f"response is not JSON: {err.message}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"response is not a JSON object: {text[:200]!r}")
    dtypes = dict(dtypes or {})
    if "predictions" in doc:
        rows = doc["predictions"]
        if not isinstance(rows, list):
            raise ValueError("'predictions' must be a list")
        if not rows:
            return {}
        if _is_element_object(rows[0]):
            names = list(rows[0])
            for i, row in enumerate(rows):
                if not _is_element_object(row) or set(row) != set(names):
                    raise ValueError(f"prediction {i} does not have the outputs {sorted(names)}")
            return {n: _decode_value([row[n] for row in rows], dtypes.get(n)) for n in names}
        return {single_output_name: _decode_value(rows, dtypes.get(single_output_name))}
    if "outputs" in doc:
        outputs = doc["outputs"]
        if _is_element_object(outputs):
            return {n: _decode_value(v, dtypes.get(n)) for n, v in outputs.items()}
        return {single_output_name: _decode_value(outputs, dtypes.get(single_output_name))}
    if "error" in doc:
        raise ValueError(f"TF Serving error: {doc['error']}")
    raise ValueError(f"response has neither 'predictions' nor 'outputs': {text[:200]!r}")


def encode_error(message: str) -> str:
    """TF Serving's error body (MakeJsonFromStatus): ``{"error": message}``, pretty-printed.

    Args:
      message: the status message (TF Serving writes the message without the code).

    Returns:
      The JSON text.
    """
    writer = _Writer(pretty=True)
    writer.start(False)
    writer.string("error")
    writer.string(message)
    writer.end()
    return writer.text()


def decode_error(body: str | bytes) -> str | None:
    """The message of a TF Serving ``{"error": message}`` body, or None if it is not one.

    Args:
      body: a response body.

    Returns:
      The message, or None when the body is not JSON or has no string ``error``.
    """
    try:
        doc = _parse(_text(body))
    except RestError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return doc["error"]
    return None
