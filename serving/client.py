"""A client for the cascade served by TF Serving (gRPC PredictionService or REST JSON).

    client = CascadeClient("localhost", model_name="cascade", timeout=2.0, retries=3)
    result = client.predict(user_features, history, candidates)   # protocol="grpc" | "rest"
    result["top_k_video_ids"], result["top_k_scores"]

Transient failures (gRPC UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED, HTTP 503 and
connection errors) are retried with exponential backoff; everything else raises
:class:`ServingError` with the server's message.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

import numpy as np

from tfcascade import features as F

RETRYABLE_GRPC = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")


class ServingError(RuntimeError):
    """The model server refused or failed a request (not retried, or retries exhausted)."""


def build_inputs(user_features: Mapping, history: Mapping, candidates: Mapping) -> dict[str, np.ndarray]:
    """Checks and shapes one or more requests' raw ids into the signature's inputs.

    ``user_features``: each of ``features.USER_FEATURES`` as an int or ``[B]``;
    ``history``: ``hist_video_id``/``hist_author_id`` ``[H]`` or ``[B, H]`` (pad with −1);
    ``candidates``: each of ``features.ITEM_FEATURES`` ``[N]`` or ``[B, N]`` (pad with −1).
    """
    out = {}
    for group, names, rank in ((user_features, F.USER_FEATURES, 1), (history, F.HISTORY_FEATURES, 2),
                               (candidates, F.ITEM_FEATURES, 2)):
        for name in names:
            if name not in group:
                raise ValueError(f"missing input {name!r}")
            value = np.asarray(group[name])
            if not np.issubdtype(value.dtype, np.integer):
                raise ValueError(f"{name} must hold integer ids, got dtype {value.dtype}")
            while value.ndim < rank:
                value = value[None]
            if value.ndim != rank:
                raise ValueError(f"{name} must have rank {rank}, got shape {value.shape}")
            out[name] = value.astype(np.int64)
    n = {out[name].shape for name in F.ITEM_FEATURES}
    if len(n) != 1:
        raise ValueError(f"candidate features must share one shape, got {sorted(n)}")
    if len({out[name].shape[0] for name in out}) != 1:
        raise ValueError("every input must have the same batch size")
    return out


class CascadeClient:
    """Args: host; grpc_port / rest_port; model_name; timeout (s per attempt); retries; backoff (s)."""

    def __init__(self, host: str = "localhost", grpc_port: int = 8500, rest_port: int = 8501,
                 model_name: str = "cascade", timeout: float = 5.0, retries: int = 3, backoff: float = 0.2,
                 signature_name: str = "serving_default"):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got timeout={timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got retries={retries}")
        self.host, self.grpc_port, self.rest_port = host, int(grpc_port), int(rest_port)
        self.model_name, self.signature_name = model_name, signature_name
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self._stub = None

    def predict(self, user_features: Mapping, history: Mapping, candidates: Mapping,
                protocol: str = "grpc") -> dict[str, np.ndarray]:
        """Top-K of the cascade for each request; returns the signature's outputs as arrays."""
        if protocol not in ("grpc", "rest"):
            raise ValueError(f"protocol must be 'grpc' or 'rest', got protocol={protocol!r}")
        inputs = build_inputs(user_features, history, candidates)
        call = self._grpc if protocol == "grpc" else self._rest
        return self._with_retries(lambda: call(inputs))

    def _with_retries(self, fn):
        attempt = 0
        while True:
            try:
                return fn()
            except _Retryable as err:
                if attempt >= self.retries:
                    raise ServingError(f"{err} (gave up after {attempt + 1} attempts)") from err
                time.sleep(self.backoff * 2**attempt)
                attempt += 1

    def _grpc(self, inputs):
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        if self._stub is None:
            channel = grpc.insecure_channel(f"{self.host}:{self.grpc_port}")
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = self.signature_name
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as err:
            code = err.code().name if err.code() else "UNKNOWN"
            message = f"gRPC {code} from {self.host}:{self.grpc_port}: {err.details()}"
            if code in RETRYABLE_GRPC:
                raise _Retryable(message) from err
            raise ServingError(message) from err
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def _rest(self, inputs):
        url = f"http://{self.host}:{self.rest_port}/v1/models/{self.model_name}:predict"
        body = json.dumps({"signature_name": self.signature_name,
                           "inputs": {k: v.tolist() for k, v in inputs.items()}}).encode()
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            message = f"HTTP {err.code} from {url}: {detail}"
            if err.code in (429, 503):
                raise _Retryable(message) from err
            raise ServingError(message) from err
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise _Retryable(f"cannot reach {url}: {err}") from err
        outputs = payload.get("outputs", payload)
        return {name: np.asarray(value) for name, value in outputs.items()}


class _Retryable(Exception):
    pass
