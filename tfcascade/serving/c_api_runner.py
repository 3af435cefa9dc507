"""Run SavedModel signatures through TensorFlow's C API (the C++ loader TF Serving uses).

TF Serving's binary is not always installable, but the ``tensorflow`` wheel ships
``libtensorflow_cc.so.2`` with the C API and its headers. ``tfcascade/serving/c_api/run_saved_model.c``
loads a SavedModel with ``TF_LoadSessionFromSavedModel`` (the C++ ``LoadSavedModel``: variables
restored, table / asset init ops run, as in TF Serving) and runs graph tensors with
``TF_SessionRun``. This module compiles that program, reads a signature's tensor names from
``saved_model.pb`` and runs a signature on numpy inputs, so tests can compare the C++ loader's
outputs with ``tf.saved_model.load(...).signatures[name](...)``::

    binary = compile_runner("/tmp/build")
    out = run_signature(binary, export_dir, "serving_default", {"user_id": ids, ...})

Inputs a request leaves out are fed from ``SignatureDef.defaults`` (as TF Serving does); an
input with neither a value nor a default is refused, as is an input the signature lacks.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

import tfcascade  # noqa: F401  (Keras 2 before TensorFlow, for the lazy TensorFlow imports below)

SOURCE = Path(__file__).resolve().parent / "c_api" / "run_saved_model.c"
BINARY_NAME = "run_saved_model"
OUTPUT_MAGIC = b"TFCR"
DEFAULT_TAGS = ("serve",)

# DataType codes (types.proto, equal to TF_DataType) → (numpy dtype, the C program's name).
_DTYPES = {
    1: (np.float32, "float32"),
    2: (np.float64, "float64"),
    3: (np.int32, "int32"),
    4: (np.uint8, "uint8"),
    5: (np.int16, "int16"),
    6: (np.int8, "int8"),
    9: (np.int64, "int64"),
    10: (np.bool_, "bool"),
    17: (np.uint16, "uint16"),
    19: (np.float16, "float16"),
    22: (np.uint32, "uint32"),
    23: (np.uint64, "uint64"),
}
_NAMES = {np.dtype(dtype): name for dtype, name in _DTYPES.values()}
_CODES = {np.dtype(dtype): code for code, (dtype, _) in _DTYPES.items()}

TensorSpec = tuple[str, np.dtype, "tuple[int | None, ...] | None"]


class CApiRunnerError(RuntimeError):
    """The runner could not be built, or the C program failed (its stderr is in ``stderr``)."""

    def __init__(self, message: str, stderr: str = ""):
        super().__init__(message)
        self.stderr = stderr


def _compilers() -> list[str]:
    names = [os.environ["CC"]] if os.environ.get("CC") else []
    return names + ["gcc", "cc"]


def find_compiler() -> str | None:
    """The C compiler to use: ``$CC`` if set and found, else ``gcc``, else ``cc``.

    Returns:
      The compiler's path, or None when none is on PATH.
    """
    for name in _compilers():
        path = shutil.which(name)
        if path:
            return path
    return None


def compiler_available() -> bool:
    """Whether a C compiler (``$CC``, ``gcc`` or ``cc``) is on PATH.

    Returns:
      True when :func:`compile_runner` can find a compiler.
    """
    return find_compiler() is not None


def tensorflow_dir() -> Path:
    """The installed ``tensorflow`` package folder (holding the shared libraries and include/).

    Returns:
      ``dirname(tensorflow.__file__)``, found without importing TensorFlow.

    Raises:
      CApiRunnerError: TensorFlow is not installed.
    """
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.origin:
        raise CApiRunnerError("the tensorflow package is not installed: its C API is needed")
    return Path(spec.origin).resolve().parent


def compile_command(output: str, compiler: str | None = None, linker: str | None = None) -> list[str]:
    """The compile line of the runner against the installed TensorFlow's C API.

    Args:
      output: the binary to write.
      compiler: the compiler (default :func:`find_compiler`).
      linker: passed as ``-fuse-ld=LINKER`` (e.g. ``"gold"``, which links against the 1 GB
        ``libtensorflow_cc.so.2`` several times faster than GNU ld); None: the default linker.

    Returns:
      The argument list, ``gcc -O2 -o OUT run_saved_model.c -I$TFD/include -L$TFD
      -l:libtensorflow_cc.so.2 -l:libtensorflow_framework.so.2 -Wl,-rpath,$TFD`` (TFD =
      ``dirname(tensorflow.__file__)``), plus ``-fuse-ld=LINKER`` when given.

    Raises:
      CApiRunnerError: no compiler, or the wheel lacks the headers or the libraries.
    """
    compiler = compiler or find_compiler()
    if compiler is None:
        raise CApiRunnerError(f"no C compiler found on PATH (tried {', '.join(_compilers())}); "
                              "install gcc to build the TensorFlow C API runner")
    tfd = tensorflow_dir()
    header = tfd / "include" / "tensorflow" / "c" / "c_api.h"
    if not header.is_file():
        raise CApiRunnerError(f"the TensorFlow C API header is missing: {header} (the tensorflow "
                              "wheel ships it under include/)")
    for lib in ("libtensorflow_cc.so.2", "libtensorflow_framework.so.2"):
        if not (tfd / lib).is_file():
            raise CApiRunnerError(f"the TensorFlow shared library is missing: {tfd / lib}")
    if not SOURCE.is_file():
        raise CApiRunnerError(f"the runner's source is missing: {SOURCE}")
    command = [compiler, "-O2", "-o", output, str(SOURCE), f"-I{tfd / 'include'}", f"-L{tfd}",
               "-l:libtensorflow_cc.so.2", "-l:libtensorflow_framework.so.2", f"-Wl,-rpath,{tfd}"]
    return command + ([f"-fuse-ld={linker}"] if linker else [])


def compile_runner(build_dir: str, compiler: str | None = None, timeout: float = 300) -> str:
    """Compiles ``run_saved_model.c`` into ``build_dir`` (reused while source and command match).

    Links with gold when ``ld.gold`` is on PATH (seconds instead of ~20 s with GNU ld), falling
    back to the default linker if that fails.

    Args:
      build_dir: folder for the binary (created if needed).
      compiler: the C compiler (default ``$CC``, ``gcc`` or ``cc``).
      timeout: seconds each compiler call may take.

    Returns:
      The path of the executable.

    Raises:
      CApiRunnerError: no compiler, headers or libraries, or compilation failed (with the
        compiler's output).
    """
    os.makedirs(build_dir, exist_ok=True)
    binary = os.path.join(build_dir, BINARY_NAME)
    partial = f"{binary}.{os.getpid()}.tmp"
    linkers = (["gold"] if shutil.which("ld.gold") else []) + [None]
    commands = [compile_command(partial, compiler, linker) for linker in linkers]
    stamp = binary + ".cmd"
    fingerprints = ["\n".join([*compile_command(binary, compiler, linker), str(SOURCE.stat().st_mtime_ns)])
                    for linker in linkers]  # the commands, naming the final binary, and the source
    if os.path.isfile(binary) and os.path.isfile(stamp):
        with open(stamp) as fh:
            if fh.read() in fingerprints:
                return binary
    for i, (command, fingerprint) in enumerate(zip(commands, fingerprints)):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise CApiRunnerError(f"compiling {SOURCE.name} took over {timeout}s: "
                                  f"{' '.join(command)}") from err
        if result.returncode == 0:
            os.replace(partial, binary)  # atomic: concurrent builds never see half a binary
            with open(stamp, "w") as fh:
                fh.write(fingerprint)
            return binary
        if os.path.exists(partial):
            os.remove(partial)
        if i == len(commands) - 1:
            raise CApiRunnerError(
                f"compiling {SOURCE.name} failed (exit {result.returncode}): {' '.join(command)}\n"
                f"{result.stderr[-4000:]}", result.stderr)
    raise AssertionError("unreachable")


def _read_saved_model(saved_model_dir: str):
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    pb = os.path.join(saved_model_dir, "saved_model.pb")
    pbtxt = os.path.join(saved_model_dir, "saved_model.pbtxt")
    if os.path.isfile(pb):
        with open(pb, "rb") as fh:
            saved_model.ParseFromString(fh.read())
    elif os.path.isfile(pbtxt):
        from google.protobuf import text_format

        with open(pbtxt) as fh:
            text_format.Parse(fh.read(), saved_model)
    else:
        raise FileNotFoundError(f"no SavedModel at {saved_model_dir}: neither saved_model.pb nor "
                                "saved_model.pbtxt exists there")
    return saved_model


def read_signature_defs(saved_model_dir: str, tags: Sequence[str] = DEFAULT_TAGS) -> dict:
    """The SignatureDef protos of the MetaGraphDef tagged ``tags``, by signature name.

    Raises:
      FileNotFoundError: no SavedModel there. ValueError: no MetaGraphDef with ``tags``.
    """
    saved_model = _read_saved_model(saved_model_dir)
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return dict(meta_graph.signature_def)
    found = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise ValueError(f"{saved_model_dir} has no MetaGraphDef tagged {sorted(wanted)} (it has {found})")


def _signature_def(saved_model_dir: str, signature_name: str, tags: Sequence[str] = DEFAULT_TAGS):
    signatures = read_signature_defs(saved_model_dir, tags)
    if signature_name not in signatures:
        raise KeyError(f"{saved_model_dir} has no signature {signature_name!r} (it has {sorted(signatures)})")
    return signatures[signature_name]


def _tensor_info(key: str, info) -> TensorSpec:
    if not info.name:
        raise ValueError(f"signature tensor {key!r} is not a dense tensor (composite and sparse "
                         "tensors are not supported)")
    if info.dtype not in _DTYPES:
        raise ValueError(f"signature tensor {key!r} has dtype code {info.dtype}, which the C "
                         "runner does not support (numeric and bool only)")
    shape = None
    if not info.tensor_shape.unknown_rank:
        shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
    return info.name, np.dtype(_DTYPES[info.dtype][0]), shape


def signature_tensors(saved_model_dir: str, signature_name: str, tags: Sequence[str] = DEFAULT_TAGS
                      ) -> tuple[dict[str, TensorSpec], dict[str, str]]:
    """A signature's graph tensors, read from ``saved_model.pb``.

    Args:
      saved_model_dir: the SavedModel folder.
      signature_name: e.g. ``"serving_default"``.
      tags: the MetaGraphDef's tag set.

    Returns:
      ``(inputs, outputs)``: ``inputs`` maps each input key to ``(tensor_name, numpy dtype,
      shape)`` with ``None`` for unknown dims (shape ``None`` when the rank is unknown);
      ``outputs`` maps each output key to its tensor name (e.g. ``StatefulPartitionedCall:1``).

    Raises:
      FileNotFoundError: no SavedModel there. KeyError: no such signature. ValueError: no
        MetaGraphDef with ``tags``, or a tensor the runner cannot handle.
    """
    signature = _signature_def(saved_model_dir, signature_name, tags)
    inputs = {key: _tensor_info(key, info) for key, info in signature.inputs.items()}
    outputs = {key: _tensor_info(key, info)[0] for key, info in signature.outputs.items()}
    return inputs, outputs


def signature_defaults(saved_model_dir: str, signature_name: str,
                       tags: Sequence[str] = DEFAULT_TAGS) -> dict[str, np.ndarray]:
    """The default values a signature declares for optional inputs (``SignatureDef.defaults``).

    Args:
      saved_model_dir: the SavedModel folder.
      signature_name: the signature.
      tags: the MetaGraphDef's tag set.

    Returns:
      Input key → default value (empty when the signature has no optional input).
    """
    import tensorflow as tf

    signature = _signature_def(saved_model_dir, signature_name, tags)
    return {key: tf.make_ndarray(proto) for key, proto in signature.defaults.items()}


def _read_output(path: str, tensor: str) -> np.ndarray:
    with open(path, "rb") as fh:
        blob = fh.read()
    if len(blob) < 12 or blob[:4] != OUTPUT_MAGIC:
        raise CApiRunnerError(f"output {tensor}: {path} is not a run_saved_model output file")
    code, rank = np.frombuffer(blob, np.int32, 2, 4)
    if int(code) not in _DTYPES:
        raise CApiRunnerError(f"output {tensor}: unsupported dtype code {int(code)}")
    dims = tuple(int(d) for d in np.frombuffer(blob, np.int64, int(rank), 12))
    dtype = np.dtype(_DTYPES[int(code)][0])
    offset = 12 + 8 * int(rank)
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(blob) - offset != expected:
        raise CApiRunnerError(f"output {tensor}: {path} holds {len(blob) - offset} data bytes, "
                              f"shape {dims} of {dtype} needs {expected}")
    return np.frombuffer(blob, dtype, offset=offset).reshape(dims).copy()


def _failure_message(stderr: str) -> str:
    ours = [line for line in stderr.splitlines() if line.startswith("run_saved_model:")]
    return "\n".join(ours) if ours else stderr.strip()[-4000:]


def run_tensors(binary: str, saved_model_dir: str, feeds: Mapping[str, np.ndarray],
                fetches: Sequence[str], tags: Sequence[str] = DEFAULT_TAGS,
                timeout: float = 120) -> dict[str, np.ndarray]:
    """Loads the SavedModel with the C API and runs graph tensors.

    Args:
      binary: the executable from :func:`compile_runner`.
      saved_model_dir: the SavedModel folder.
      feeds: tensor name (``op:index``) → value; the array's dtype is fed as is.
      fetches: tensor names to fetch.
      tags: the MetaGraphDef's tag set.
      timeout: seconds the program may run (load and run).

    Returns:
      Fetched tensor name → value.

    Raises:
      CApiRunnerError: the program failed (load, graph or run error) or timed out; the message
        holds its error lines, ``stderr`` all of its stderr.
      TypeError: a feed whose dtype the runner does not support.
    """
    with tempfile.TemporaryDirectory(prefix="c_api_runner_") as tmp:
        lines = [f"tag {tag}" for tag in tags]
        for i, (tensor, value) in enumerate(feeds.items()):
            array = np.asarray(value)
            dtype = array.dtype.newbyteorder("=")
            if dtype not in _NAMES:
                raise TypeError(f"input {tensor}: dtype {array.dtype} is not supported "
                                f"(supported: {sorted(_NAMES.values())})")
            path = os.path.join(tmp, f"in_{i}.bin")
            np.ascontiguousarray(array, dtype).tofile(path)
            words = ["in", tensor, _NAMES[dtype], str(array.ndim), *map(str, array.shape), path]
            lines.append(" ".join(words))
        paths = {}
        for i, tensor in enumerate(fetches):
            paths[tensor] = os.path.join(tmp, f"out_{i}.bin")
            lines.append(f"out {tensor} {paths[tensor]}")
        spec = os.path.join(tmp, "spec.txt")
        with open(spec, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            result = subprocess.run([binary, saved_model_dir, spec], capture_output=True, text=True,
                                    timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as err:
            stderr = err.stderr or ""
            if isinstance(stderr, bytes):
                stderr = stderr.decode(errors="replace")
            raise CApiRunnerError(f"{binary} on {saved_model_dir} did not finish in {timeout}s",
                                  stderr) from err
        if result.returncode != 0:
            raise CApiRunnerError(f"{os.path.basename(binary)} failed (exit {result.returncode}) "
                                  f"on {saved_model_dir}:\n{_failure_message(result.stderr)}",
                                  result.stderr)
        return {tensor: _read_output(path, tensor) for tensor, path in paths.items()}


def _check_input(signature_name: str, key: str, value, spec: TensorSpec) -> np.ndarray:
    _, dtype, shape = spec
    array = np.asarray(value)
    if array.dtype != dtype:
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise TypeError(f"input {key!r} of signature {signature_name!r} is {array.dtype}, "
                            f"the signature expects {dtype}")
        array = array.astype(dtype)
    if shape is not None:
        if array.ndim != len(shape) or any(w is not None and w != g for w, g in zip(shape, array.shape)):
            want = "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
            raise ValueError(f"input {key!r} of signature {signature_name!r} has shape "
                             f"{list(array.shape)}, the signature expects {want}")
    return array


def run_signature(binary: str, saved_model_dir: str, signature_name: str,
                  inputs: Mapping[str, np.ndarray], tags: Sequence[str] = DEFAULT_TAGS,
                  timeout: float = 120) -> dict[str, np.ndarray]:
    """Runs a signature through the C API on numpy inputs, like a TF Serving Predict call.

    Args:
      binary: the executable from :func:`compile_runner`.
      saved_model_dir: the SavedModel folder.
      signature_name: e.g. ``"serving_default"``.
      inputs: input key → value (cast to the signature's dtype when that is a same-kind cast);
        inputs left out are fed from ``SignatureDef.defaults``.
      tags: the MetaGraphDef's tag set.
      timeout: seconds the program may run.

    Returns:
      Output key → value, for every output of the signature.

    Raises:
      FileNotFoundError: no SavedModel at ``saved_model_dir``. KeyError: no such signature.
      ValueError: an input the signature lacks, a missing input without a default, or a shape
        the signature refuses. TypeError: a value that cannot be cast to the input's dtype.
      CApiRunnerError: the C program failed (its error lines are in the message).
    """
    specs, outputs = signature_tensors(saved_model_dir, signature_name, tags)
    unknown = sorted(set(inputs) - set(specs))
    if unknown:
        raise ValueError(f"unknown input {unknown[0]!r} for signature {signature_name!r} "
                         f"(its inputs: {sorted(specs)})")
    values = dict(inputs)
    missing = sorted(set(specs) - set(values))
    if missing:
        defaults = signature_defaults(saved_model_dir, signature_name, tags)
        without = [key for key in missing if key not in defaults]
        if without:
            raise ValueError(f"missing input {without[0]!r} for signature {signature_name!r}, "
                             "which declares no default for it")
        values.update({key: defaults[key] for key in missing})
    feeds = {specs[key][0]: _check_input(signature_name, key, value, specs[key])
             for key, value in values.items()}
    fetched = run_tensors(binary, saved_model_dir, feeds, sorted(set(outputs.values())), tags,
                          timeout)
    return {key: fetched[tensor] for key, tensor in outputs.items()}
