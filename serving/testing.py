"""TEST-ONLY doubles of TF Serving (the model server binary cannot be installed here).

``PredictionServiceDouble`` serves tensorflow-serving-api's gRPC ``PredictionService.Predict``
and ``RestDouble`` the ``/v1/models/<name>:predict`` JSON API, both on 127.0.0.1 with real TF
inference on the SavedModel (``tf.saved_model.load``). They exist to test the client end to
end; they are not a model server (no versions, batching or model management).
"""

from __future__ import annotations

import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf


class _Model:
    def __init__(self, saved_model_dir: str, model_name: str):
        self.loaded = tf.saved_model.load(saved_model_dir)
        self.name = model_name
        self.fail_next = 0  # make the next N calls fail with UNAVAILABLE / 503 (retry tests)

    def run(self, signature: str, inputs: dict) -> dict:
        fn = self.loaded.signatures[signature or "serving_default"]
        _, spec = fn.structured_input_signature
        missing = sorted(set(spec) - set(inputs))
        if missing:
            raise ValueError(f"missing inputs {missing}")
        args = {k: tf.constant(np.asarray(v), dtype=spec[k].dtype) for k, v in inputs.items() if k in spec}
        return {k: v.numpy() for k, v in fn(**args).items()}


class PredictionServiceDouble:
    """gRPC double on 127.0.0.1:<free port>; use as a context manager."""

    def __init__(self, saved_model_dir: str, model_name: str = "cascade"):
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        model = self.model = _Model(saved_model_dir, model_name)

        class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):  # noqa: N802 (gRPC interface)
                if model.fail_next:
                    model.fail_next -= 1
                    context.abort(grpc.StatusCode.UNAVAILABLE, "double: simulated outage")
                if request.model_spec.name != model.name:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request.model_spec.name}")
                try:
                    outputs = model.run(request.model_spec.signature_name,
                                        {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
                except (ValueError, tf.errors.InvalidArgumentError, KeyError) as err:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
                response = predict_pb2.PredictResponse()
                response.model_spec.CopyFrom(request.model_spec)
                for k, v in outputs.items():
                    response.outputs[k].CopyFrom(tf.make_tensor_proto(v))
                return response

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(grace=None)


class RestDouble:
    """REST double of ``POST /v1/models/<name>:predict`` on 127.0.0.1:<free port>."""

    def __init__(self, saved_model_dir: str, model_name: str = "cascade"):
        model = self.model = _Model(saved_model_dir, model_name)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, code, payload):
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802 (http.server interface)
                if model.fail_next:
                    model.fail_next -= 1
                    return self._send(503, {"error": "double: simulated outage"})
                expected = f"/v1/models/{model.name}:predict"
                if self.path != expected:
                    return self._send(404, {"error": f"Servable not found for request: {self.path}"})
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    outputs = model.run(request.get("signature_name"), request["inputs"])
                except (ValueError, tf.errors.InvalidArgumentError, KeyError) as err:
                    return self._send(400, {"error": str(err)})
                clean = {k: np.where(np.isinf(v), -3.4e38, v).tolist() if v.dtype.kind == "f" else v.tolist()
                         for k, v in outputs.items()}
                return self._send(200, {"outputs": clean})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
