"""A client for the cascade served by TF Serving (gRPC PredictionService or REST JSON).

    client = CascadeClient("localhost", model_name="cascade", timeout=2.0, retries=3)
    result = client.predict(user_features, history, candidates)   # protocol="grpc" | "rest"
    result["top_k_video_ids"], result["top_k_scores"]
    result = client.recommend(user_features, history, exclude=[1000000011])
    client.call("rank", inputs, protocol="rest", rest_format="rows")   # any signature

REST speaks TF Serving's JSON (:mod:`tfcascade.serving.rest_json`): the columnar format
(``{"inputs": ...}`` -> ``{"outputs": ...}``) by default, the row format
(``{"instances": [...]}`` -> ``{"predictions": [...]}``) with ``rest_format="rows"``; outputs
come back with the same dtypes as over gRPC (``-Infinity`` scores included), and an error's
``{"error": ...}`` message is what :class:`ServingError` reports.

Transient failures (gRPC UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED, HTTP 429 / 503 /
504 and connection errors) are retried with exponential backoff; everything else raises
:class:`ServingError` with the server's message.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tfcascade import features as F
from tfcascade.serving import rest_json

RETRYABLE_GRPC = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
RETRYABLE_HTTP = (429, 503, 504)  # TF Serving's RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED
EXCLUDE_INPUT = "exclude_video_id"
# Output dtypes of the exported signatures (REST JSON carries none).
OUTPUT_DTYPES = {"top_k_indices": np.int64, "top_k_video_ids": np.int64, "top_k_scores": np.float32,
                 "scores": np.float32}


class ServingError(RuntimeError):
    """The model server refused or failed a request (not retried, or retries exhausted).

    Attributes:
      code: the HTTP status (int) or gRPC status name (str) of the last failure, None for
        failures without one (connection errors, malformed responses).
      server_message: the server's own message (TF Serving's ``error`` / gRPC details), if any.
    """

    def __init__(self, message: str, code: int | str | None = None, server_message: str | None = None):
        super().__init__(message)
        self.code, self.server_message = code, server_message


def _ids(name: str, value: Any, rank: int) -> np.ndarray:
    value = np.asarray(value)
    if value.size == 0 and value.dtype.kind == "f":
        value = value.astype(np.int64)  # [] / [[]]: an empty list of ids
    if not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids, got dtype {value.dtype}")
    while value.ndim < rank:
        value = value[None]
    if value.ndim != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {value.shape}")
    return value.astype(np.int64)


def _group(out: dict, group: Mapping, names, rank: int) -> None:
    for name in names:
        if name not in group:
            raise ValueError(f"missing input {name!r}")
        out[name] = _ids(name, group[name], rank)


def _same_batch(out: Mapping[str, np.ndarray]) -> None:
    sizes = {name: v.shape[0] for name, v in out.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every input must have the same batch size, got {sizes}")


def build_inputs(user_features: Mapping, history: Mapping, candidates: Mapping) -> dict[str, np.ndarray]:
    """Checks and shapes one or more requests' raw ids into ``serving_default``'s inputs.

    Args:
      user_features: each of ``features.USER_FEATURES`` as an int or ``[B]``.
      history: each of ``features.HISTORY_FEATURES`` ``[H]`` or ``[B, H]`` (pad with −1).
      candidates: each of ``features.ITEM_FEATURES`` ``[N]`` or ``[B, N]`` (pad with −1).

    Returns:
      Input name -> int64 array.

    Raises:
      ValueError: a missing input, non-integer ids, a wrong rank or unequal shapes.
    """
    out: dict[str, np.ndarray] = {}
    _group(out, user_features, F.USER_FEATURES, 1)
    _group(out, history, F.HISTORY_FEATURES, 2)
    _group(out, candidates, F.ITEM_FEATURES, 2)
    n = {out[name].shape for name in F.ITEM_FEATURES}
    if len(n) != 1:
        raise ValueError(f"candidate features must share one shape, got {sorted(n)}")
    _same_batch(out)
    return out


def build_recommend_inputs(user_features: Mapping, history: Mapping, exclude: Any = None
                           ) -> dict[str, np.ndarray]:
    """Checks and shapes raw ids into the ``recommend`` signature's inputs.

    Args:
      user_features: each of ``features.USER_FEATURES`` as an int or ``[B]``.
      history: each of ``features.HISTORY_FEATURES`` ``[H]`` or ``[B, H]`` (pad with −1).
      exclude: raw video ids never to recommend, ``[E]`` (the same for every request) or
        ``[B, E]`` (pad with −1), or a mapping holding them as ``exclude_video_id``; None
        leaves the input out.

    Returns:
      Input name -> int64 array (``exclude_video_id`` only when ``exclude`` is given).

    Raises:
      ValueError: a missing input, non-integer ids, a wrong rank or unequal batch sizes.
    """
    out: dict[str, np.ndarray] = {}
    _group(out, user_features, F.USER_FEATURES, 1)
    _group(out, history, F.HISTORY_FEATURES, 2)
    shapes = {out[name].shape for name in F.HISTORY_FEATURES}
    if len(shapes) != 1:
        raise ValueError(f"history features must share one shape, got {sorted(shapes)}")
    if exclude is not None:
        if isinstance(exclude, Mapping):
            if EXCLUDE_INPUT not in exclude:
                raise ValueError(f"missing input {EXCLUDE_INPUT!r}")
            exclude = exclude[EXCLUDE_INPUT]
        value = _ids(EXCLUDE_INPUT, exclude, 2)
        batch = out[F.USER_FEATURES[0]].shape[0]
        if value.shape[0] == 1 and batch > 1:
            value = np.repeat(value, batch, axis=0)
        out[EXCLUDE_INPUT] = value
    _same_batch(out)
    return out


class CascadeClient:
    """Calls the cascade's signatures on TF Serving.

    Args:
      host: the server; ``grpc_port`` / ``rest_port`` its ports.
      model_name: the model's name on the server.
      timeout: seconds per attempt; ``retries``: retries of transient failures; ``backoff``:
        seconds before the first retry (doubling after each).
      signature_name: the signature :meth:`predict` calls.
      recommend_signature: the signature :meth:`recommend` calls.
      rest_format: ``"columnar"`` or ``"rows"``, the REST JSON format (per call overridable).
    """

    def __init__(self, host: str = "localhost", grpc_port: int = 8500, rest_port: int = 8501,
                 model_name: str = "cascade", timeout: float = 5.0, retries: int = 3, backoff: float = 0.2,
                 signature_name: str = "serving_default", recommend_signature: str = "recommend",
                 rest_format: str = "columnar"):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got timeout={timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got retries={retries}")
        _check_format(rest_format)
        self.host, self.grpc_port, self.rest_port = host, int(grpc_port), int(rest_port)
        self.model_name, self.signature_name = model_name, signature_name
        self.recommend_signature, self.rest_format = recommend_signature, rest_format
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self._stub = None

    def predict(self, user_features: Mapping, history: Mapping, candidates: Mapping,
                protocol: str = "grpc", rest_format: str | None = None) -> dict[str, np.ndarray]:
        """Top-K of the cascade over given candidates (``signature_name``, default serving_default).

        Args:
          user_features, history, candidates: raw ids, see :func:`build_inputs`.
          protocol: ``"grpc"`` or ``"rest"``; ``rest_format``: overrides the client's.

        Returns:
          The signature's outputs: ``top_k_indices``, ``top_k_video_ids`` (int64 ``[B, K]``),
          ``top_k_scores`` (float32 ``[B, K]``, −inf where fewer than K survive).
        """
        _check_protocol(protocol)
        return self.call(self.signature_name, build_inputs(user_features, history, candidates),
                         protocol, rest_format)

    def recommend(self, user_features: Mapping, history: Mapping, exclude: Any = None,
                  protocol: str = "grpc", rest_format: str | None = None) -> dict[str, np.ndarray]:
        """Top-K recommendations from the whole catalogue (the ``recommend`` signature).

        Args:
          user_features, history: raw ids, see :func:`build_recommend_inputs`.
          exclude: raw video ids not to recommend, ``[E]`` or ``[B, E]`` (−1 padded), or None.
            With None, gRPC leaves ``exclude_video_id`` out (the SignatureDef's default applies);
            REST sends an empty ``[B, 0]`` list, because TF Serving's REST API requires every
            input of the signature, defaulted ones included.
          protocol: ``"grpc"`` or ``"rest"``; ``rest_format``: overrides the client's.

        Returns:
          ``top_k_video_ids`` (int64 ``[B, K]``) and ``top_k_scores`` (float32 ``[B, K]``).
        """
        _check_protocol(protocol)
        inputs = build_recommend_inputs(user_features, history, exclude)
        if exclude is None and protocol == "rest":
            batch = inputs[F.USER_FEATURES[0]].shape[0]
            inputs[EXCLUDE_INPUT] = np.zeros((batch, 0), np.int64)
        return self.call(self.recommend_signature, inputs, protocol, rest_format)

    def call(self, signature_name: str, inputs: Mapping[str, Any], protocol: str = "grpc",
             rest_format: str | None = None, output_dtypes: Mapping[str, Any] | None = None
             ) -> dict[str, np.ndarray]:
        """Calls any signature of the model, with retries.

        Args:
          signature_name: the signature.
          inputs: input name -> array (sent as they are).
          protocol: ``"grpc"`` or ``"rest"``; ``rest_format``: ``"columnar"`` / ``"rows"``
            (default the client's).
          output_dtypes: REST only, output name -> dtype (default :data:`OUTPUT_DTYPES`; other
            outputs: ints -> int64, floats -> float64).

        Returns:
          Output name -> array.

        Raises:
          ServingError: the server refused the call, or retries ran out.
        """
        _check_protocol(protocol)
        fmt = _check_format(rest_format or self.rest_format)
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        if protocol == "grpc":
            return self._with_retries(lambda: self._grpc(signature_name, arrays))
        dtypes = OUTPUT_DTYPES if output_dtypes is None else output_dtypes
        body = rest_json.encode_request(arrays, signature_name, fmt).encode("utf-8", "surrogateescape")
        return self._with_retries(lambda: self._rest(body, dtypes))

    def _with_retries(self, fn: Callable[[], dict]) -> dict:
        attempt = 0
        while True:
            try:
                return fn()
            except _Retryable as err:
                if attempt >= self.retries:
                    raise ServingError(f"{err} (gave up after {attempt + 1} attempts)", err.code,
                                       err.server_message) from err
                time.sleep(self.backoff * 2**attempt)
                attempt += 1

    def _grpc(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        if self._stub is None:
            channel = grpc.insecure_channel(f"{self.host}:{self.grpc_port}")
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signature_name
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as err:
            code = err.code().name if err.code() else "UNKNOWN"
            message = f"gRPC {code} from {self.host}:{self.grpc_port}: {err.details()}"
            if code in RETRYABLE_GRPC:
                raise _Retryable(message, code, err.details()) from err
            raise ServingError(message, code, err.details()) from err
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def _rest(self, body: bytes, dtypes: Mapping[str, Any]) -> dict[str, np.ndarray]:
        name = urllib.parse.quote(self.model_name, safe="")
        url = f"http://{self.host}:{self.rest_port}/v1/models/{name}:predict"
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            server_message = rest_json.decode_error(raw)
            detail = server_message if server_message is not None else raw.decode(errors="replace")[:500]
            message = f"HTTP {err.code} from {url}: {detail}"
            if err.code in RETRYABLE_HTTP:
                raise _Retryable(message, err.code, server_message) from err
            raise ServingError(message, err.code, server_message) from err
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise _Retryable(f"cannot reach {url}: {err}") from err
        try:
            return rest_json.decode_response(payload, dtypes, single_output_name="scores")
        except ValueError as err:
            raise ServingError(f"malformed response from {url}: {err}", 200) from err


def _check_protocol(protocol: str) -> None:
    if protocol not in ("grpc", "rest"):
        raise ValueError(f"protocol must be 'grpc' or 'rest', got protocol={protocol!r}")


def _check_format(rest_format: str) -> str:
    if rest_format not in rest_json.FORMATS:
        raise ValueError(f"rest_format must be 'columnar' or 'rows', got rest_format={rest_format!r}")
    return rest_format


class _Retryable(Exception):
    def __init__(self, message: str, code: int | str | None = None, server_message: str | None = None):
        super().__init__(message)
        self.code, self.server_message = code, server_message
