"""TEST-ONLY doubles of TF Serving, for testing the client where the model server binary is absent.

``PredictionServiceDouble`` serves tensorflow-serving-api's gRPC ``PredictionService.Predict``
and ``RestDouble`` the ``/v1/models/<name>[/versions/<v>]:predict`` JSON API, both on 127.0.0.1
with real TF inference on the SavedModel (``tf.saved_model.load``). They exist to test the
client end to end; they are not a model server (one version, no batching or model management).

They follow TF Serving (tensorflow/serving 9d981c5c) where a client can tell:

- REST bodies, formats, error JSON and HTTP statuses come from :mod:`tfcascade.serving.rest_json`
  (``util/json_tensor.cc``, ``model_servers/http_rest_api_handler.cc``, ``http_server.cc``):
  unknown model 404 ``Servable not found for request: Latest(<name>)``, unknown signature 400,
  bad JSON/types/shapes of the JSON 400 with TF Serving's messages.
- The REST decoder needs every signature input, including those with a
  ``SignatureDef.defaults`` entry (TF Serving decodes against ``SignatureDef.inputs``);
  ``RestDouble(..., rest_defaults=True)`` lets requests leave defaulted inputs out instead.
- gRPC follows ``servables/tensorflow/predict_util.cc`` and TF's ``GetInputValues``
  (``tensorflow/cc/saved_model/util.cc``): missing inputs take their ``SignatureDef.defaults``
  value, or fail INVALID_ARGUMENT; unknown inputs fail INVALID_ARGUMENT; an unknown signature
  fails FAILED_PRECONDITION; an unknown model NOT_FOUND.

Checks of dtype and shape against the signature (TF Serving leaves them to the TF runtime,
whose wording depends on the graph) use the double's own one-line messages.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf

from tfcascade.serving import rest_json
from tfcascade.serving.c_api_runner import read_signature_defs

_PREDICTION_PATH = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:"
                              r"(classify|regress|predict)", re.IGNORECASE)


class ServingStatus(Exception):
    """A failed call as TF Serving reports it: canonical ``code`` name and ``message``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    @property
    def http_status(self) -> int:
        return rest_json.HTTP_STATUS.get(self.code, 500)


def _tf_dtype_name(value: np.ndarray) -> str:
    return "string" if value.dtype.kind in "OSU" else tf.as_dtype(value.dtype).name


class _Model:
    def __init__(self, saved_model_dir: str, model_name: str, version: int = 1):
        self.loaded = tf.saved_model.load(saved_model_dir)
        self.signature_defs = read_signature_defs(saved_model_dir)
        self.name = model_name
        self.version = int(version)
        self.fail_next = 0  # make the next N calls fail with UNAVAILABLE / 503 (retry tests)

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> None:
        """ServerCore::GetServableHandle: raises NOT_FOUND for another model or version."""
        if label:
            raise ServingStatus("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
        if name != self.name or (version is not None and version != self.version):
            request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise ServingStatus("NOT_FOUND", f"Servable not found for request: {request}")

    def specs(self, signature: str) -> dict[str, tf.TensorSpec]:
        """The signature's inputs (name -> TensorSpec) from ``structured_input_signature``."""
        _, spec = self.loaded.signatures[signature].structured_input_signature
        return dict(spec)

    def defaults(self, signature: str) -> dict[str, np.ndarray]:
        """``SignatureDef.defaults`` of ``signature`` as arrays."""
        return {k: tf.make_ndarray(v) for k, v in self.signature_defs[signature].defaults.items()}

    def resolve(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every input of the signature: the request's, else the default (predict_util.cc)."""
        sig = self.signature_defs[signature]
        expected, sent = set(sig.inputs), set(inputs)
        if len(sent) > len(expected) or (len(sent) < len(expected) and not sig.defaults):
            raise ServingStatus(
                "INVALID_ARGUMENT",
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
        defaults = self.defaults(signature)
        out = {}
        for alias in sorted(expected):
            if alias in inputs:
                out[alias] = inputs[alias]
            elif alias in defaults:
                out[alias] = defaults[alias]
            else:
                raise ServingStatus(
                    "INVALID_ARGUMENT",
                    f"Signature input alias: {alias}(feed name: {sig.inputs[alias].name}) not found in "
                    f"request and no default value provided. Inputs expected to be in the request "
                    f"{{{','.join(sorted(sent))}}}, or default input alias set: "
                    f"{','.join(sorted(defaults))}")
        if sent - expected:
            raise ServingStatus(
                "INVALID_ARGUMENT",
                f"Inputs contains invalid name. Used request inputs: {','.join(sorted(sent & expected))}"
                f", request input: {','.join(sorted(sent))}")
        return out

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs ``signature`` on complete inputs; dtype/shape checked against the signature."""
        args = {}
        for name, spec in self.specs(signature).items():
            value = np.asarray(inputs[name])
            if _tf_dtype_name(value) != spec.dtype.name:
                raise ServingStatus("INVALID_ARGUMENT", f"input {name}: expected dtype {spec.dtype.name}, "
                                                        f"got {_tf_dtype_name(value)}")
            if not spec.shape.is_compatible_with(value.shape):
                raise ServingStatus("INVALID_ARGUMENT", f"input {name}: shape {list(value.shape)} is not "
                                                        f"compatible with the signature's {spec.shape}")
            args[name] = tf.constant(value, dtype=spec.dtype)
        try:
            outputs = self.loaded.signatures[signature](**args)
        except tf.errors.OpError as err:
            raise ServingStatus(_OP_ERROR_CODES.get(type(err).__name__, "INTERNAL"), err.message) from err
        return {k: v.numpy() for k, v in outputs.items()}


_OP_ERROR_CODES = {"InvalidArgumentError": "INVALID_ARGUMENT", "OutOfRangeError": "OUT_OF_RANGE",
                   "FailedPreconditionError": "FAILED_PRECONDITION", "NotFoundError": "NOT_FOUND",
                   "ResourceExhaustedError": "RESOURCE_EXHAUSTED", "UnimplementedError": "UNIMPLEMENTED"}


class PredictionServiceDouble:
    """gRPC double on 127.0.0.1:<free port>; use as a context manager."""

    def __init__(self, saved_model_dir: str, model_name: str = "cascade", version: int = 1):
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        model = self.model = _Model(saved_model_dir, model_name, version)

        def predict(request):
            spec = request.model_spec
            model.servable(spec.name, spec.version.value if spec.HasField("version") else None,
                           spec.version_label)
            signature = spec.signature_name or rest_json.DEFAULT_SIGNATURE
            if signature not in model.signature_defs:
                raise ServingStatus("FAILED_PRECONDITION", f'Serving signature key "{signature}" not found.')
            inputs = {}
            for alias, proto in request.inputs.items():
                try:
                    inputs[alias] = tf.make_ndarray(proto)
                except (TypeError, ValueError) as err:
                    raise ServingStatus("INVALID_ARGUMENT", f"tensor parsing error: {alias}") from err
            inputs = model.resolve(signature, inputs)
            names = sorted(model.signature_defs[signature].outputs)
            wanted = list(request.output_filter) or names
            for alias in wanted:
                if alias not in names:
                    raise ServingStatus("INVALID_ARGUMENT",
                                        f"output tensor alias not found in signature: {alias} Outputs "
                                        f"expected to be in the set {{{','.join(names)}}}.")
            for i, alias in enumerate(wanted):
                if alias in wanted[:i]:
                    raise ServingStatus("INVALID_ARGUMENT", f"duplicate output tensor alias: {alias}")
            outputs = model.run(signature, inputs)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = spec.name
            response.model_spec.signature_name = signature
            response.model_spec.version.value = model.version
            for alias in wanted:
                response.outputs[alias].CopyFrom(tf.make_tensor_proto(outputs[alias]))
            return response

        class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):  # noqa: N802 (gRPC interface)
                if model.fail_next:
                    model.fail_next -= 1
                    context.abort(grpc.StatusCode.UNAVAILABLE, "double: simulated outage")
                try:
                    return predict(request)
                except ServingStatus as err:
                    context.abort(getattr(grpc.StatusCode, err.code), err.message)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(grace=None)


class RestDouble:
    """REST double of ``POST /v1/models/<name>[/versions/<v>]:predict`` on 127.0.0.1:<free port>.

    Args:
      saved_model_dir: the SavedModel to serve.
      model_name: the model's name in the URL; ``version``: its only version.
      rest_defaults: let requests leave out inputs that have a ``SignatureDef.defaults`` entry
        (TF Serving's REST API does not: False behaves as TF Serving).
    """

    def __init__(self, saved_model_dir: str, model_name: str = "cascade", version: int = 1,
                 rest_defaults: bool = False):
        model = self.model = _Model(saved_model_dir, model_name, version)

        def predict(path: str, body: bytes) -> tuple[int, str]:
            match = _PREDICTION_PATH.fullmatch(path)
            if not match or match.group(4) != "predict":
                if match and match.group(4) in ("classify", "regress"):
                    return 501, rest_json.encode_error(f"double: :{match.group(4)} is not served")
                return 400, rest_json.encode_error(f"Malformed request: POST {path}")
            name = urllib.parse.unquote(match.group(1))
            version = None if match.group(2) is None else int(match.group(2))
            label = None if match.group(3) is None else urllib.parse.unquote(match.group(3))

            def specs(signature: str) -> dict:  # HttpRestApiHandler::GetInfoMap
                model.servable(name, version, label)
                if signature not in model.signature_defs:
                    raise rest_json.RestError(
                        400, f'Serving signature name: "{signature}" not found in signature def')
                return model.specs(signature)

            def defaults(signature: str) -> set[str]:
                return set(model.signature_defs[signature].defaults) if rest_defaults else set()

            try:
                signature, inputs, fmt = rest_json.decode_request(body, specs, defaults)
                outputs = model.run(signature, model.resolve(signature, inputs))
                return 200, rest_json.encode_response(outputs, fmt)
            except rest_json.RestError as err:
                return err.status, rest_json.encode_error(err.message)
            except ServingStatus as err:
                return err.http_status, rest_json.encode_error(err.message)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, code: int, text: str, content_type: str = "application/json"):
                body = text.encode("utf-8", "surrogateescape")
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802 (http.server interface)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = urllib.parse.urlsplit(self.path).path
                if not re.fullmatch(r"/v1/.*", path, re.IGNORECASE):
                    return self._send(404, "Not Found", "text/plain")  # no TF Serving handler
                if model.fail_next:
                    model.fail_next -= 1
                    return self._send(503, rest_json.encode_error("double: simulated outage"))
                return self._send(*predict(path, body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
