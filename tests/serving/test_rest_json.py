"""TF Serving's REST JSON conventions: vectors, round trips, the doubles and the client.

The vectors (tests/serving/data/tf_serving_json_vectors.json) were written from a reading of
tensorflow/serving's json_tensor.cc and REST handler (commit in the file's "source").
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfcascade import features as F
from tfcascade.serving import rest_json
from tfcascade.serving.c_api_runner import read_signature_defs
from tfcascade.serving.client import CascadeClient, ServingError
from tfcascade.serving.testing import PredictionServiceDouble, RestDouble

VECTORS = json.loads((Path(__file__).parent / "data" / "tf_serving_json_vectors.json").read_text())
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _values(values):
    if isinstance(values, list):
        return [_values(v) for v in values]
    return _NONFINITE.get(values, values) if isinstance(values, str) else values


def _array(t: dict) -> np.ndarray:
    if t["dtype"] == "string":
        flat = np.array(t["values"], dtype=object).ravel()
        out = np.empty(flat.size, dtype=object)
        out[:] = [v.encode() for v in flat]
        return out.reshape(t["shape"])
    return np.array(_values(t["values"]), dtype=t["dtype"]).reshape(t["shape"])


def _assert_same(got: np.ndarray, want: np.ndarray, name: str = "") -> None:
    assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    if want.dtype.kind == "f":  # bit-exact, NaN equal to NaN (JSON's NaN has no sign), -0.0 != 0.0
        np.testing.assert_array_equal(np.signbit(got) & ~np.isnan(got), np.signbit(want) & ~np.isnan(want),
                                      err_msg=name)
        np.testing.assert_array_equal(got, want, err_msg=name)
    else:
        assert got.tolist() == want.tolist(), name


def _specs(vector: dict) -> dict:
    return {name: (s["dtype"], s["shape"]) for name, s in VECTORS["input_sets"][vector["inputs"]].items()}


# ----------------------------------------------------------------------------------------------
# Vectors


def test_vectors_cite_their_source():
    source = VECTORS["source"]
    assert source["repository"] == "https://github.com/tensorflow/serving"
    assert len(source["commit"]) == 40 and "tensorflow_serving/util/json_tensor.cc" in source["files"]


@pytest.mark.parametrize("vector", VECTORS["requests"], ids=lambda v: v["name"])
def test_request_vector(vector):
    call = lambda: rest_json.decode_request(vector["body"], _specs(vector), vector.get("defaults", ()))  # noqa: E731
    if "error" in vector:
        with pytest.raises(rest_json.RestError) as info:
            call()
        assert info.value.status == vector["error"]["status"]
        assert vector["error"]["message"] in info.value.message
        # One line, unless TF Serving quotes a JSON object (RapidJSON pretty-prints objects).
        message = info.value.message
        assert "\n" not in message or "JSON Value: {" in message or "JSON object: {" in message
        return
    signature, tensors, fmt = call()
    want = vector["expect"]
    assert (signature, fmt) == (want["signature_name"], want["format"])
    assert sorted(tensors) == sorted(want["tensors"])
    for name, t in want["tensors"].items():
        _assert_same(tensors[name], _array(t), name)
    # The same bytes decode the same way.
    assert rest_json.decode_request(vector["body"].encode(), _specs(vector), vector.get("defaults", ()))[2] == fmt


@pytest.mark.parametrize("fmt", rest_json.FORMATS)
@pytest.mark.parametrize("vector", VECTORS["responses"], ids=lambda v: v["name"])
def test_response_vector(vector, fmt):
    outputs = {name: _array(t) for name, t in vector["outputs"].items()}
    want = vector[fmt]
    if isinstance(want, dict):
        with pytest.raises(rest_json.RestError) as info:
            rest_json.encode_response(outputs, fmt)
        assert info.value.status == want["error"]["status"]
        assert want["error"]["message"] in info.value.message
        return
    text = rest_json.encode_response(outputs, fmt)
    assert text == "\n".join(want)
    dtypes = {name: t["dtype"] for name, t in vector["outputs"].items()}
    (only,) = outputs if len(outputs) == 1 else (None,)
    decoded = rest_json.decode_response(text, dtypes, single_output_name=only or "output")
    first = outputs[next(iter(outputs))]
    if first.ndim > 1 and not first.shape[0]:
        # [] carries no inner dimensions: "predictions": [] names nothing, "outputs": [] is [0].
        assert decoded == {} if fmt == "rows" else decoded[only].shape == (0,)
        return
    assert sorted(decoded) == sorted(outputs)
    for name, array in outputs.items():
        _assert_same(decoded[name], array, name)


@pytest.mark.parametrize("vector", VECTORS["errors"], ids=lambda v: v["message"][:30])
def test_error_vector(vector):
    body = rest_json.encode_error(vector["message"])
    assert body == "\n".join(vector["body"])
    assert rest_json.decode_error(body) == vector["message"]
    assert rest_json.HTTP_STATUS["NOT_FOUND"] == 404 and rest_json.HTTP_STATUS["INVALID_ARGUMENT"] == 400


def test_decode_response_reads_tf_serving_spellings_and_refuses_errors():
    out = rest_json.decode_response('{"predictions": [[1.5, -Infinity], [NaN, 2e-07]]} ', {"output": "float32"})
    assert out["output"].dtype == np.float32 and np.isneginf(out["output"][0, 1]) and np.isnan(out["output"][1, 0])
    out = rest_json.decode_response('{"outputs": {"ids": [[1, 2]], "blob_bytes": [{"b64": "aGk="}]}}')
    assert out["ids"].dtype == np.int64 and out["blob_bytes"].tolist() == [b"hi"]
    with pytest.raises(ValueError, match="TF Serving error: boom"):
        rest_json.decode_response('{"error": "boom"}')
    with pytest.raises(ValueError, match="ragged"):
        rest_json.decode_response('{"outputs": [[1, 2], [3]]}')
    with pytest.raises(ValueError, match="does not have the outputs"):
        rest_json.decode_response('{"predictions": [{"a": 1}, {"b": 2}]}')
    assert rest_json.decode_error("<html>Not Found</html>") is None


def test_encode_request_formats_and_errors():
    inputs = {"ids": np.array([[1, -1], [2, 3]]), "w": np.array([0.1, np.nan], np.float32),
              "blob": np.array([b"\x00\xff", b"x"], dtype=object)}
    assert rest_json.encode_request(inputs, "recommend") == (
        '{"signature_name":"recommend","inputs":{"ids":[[1,-1],[2,3]],"w":[0.1,NaN],'
        '"blob":[{"b64":"AP8="},{"b64":"eA=="}]}}')
    assert rest_json.encode_request({"x": [1.5]}, None, "rows") == '{"instances":[{"x":1.5}]}'
    with pytest.raises(ValueError, match=r"0-th dimension equal: y has 3, x has 2"):
        rest_json.encode_request({"x": [1, 2], "y": [1, 2, 3]}, "s", "rows")
    with pytest.raises(ValueError, match="input x is a scalar"):
        rest_json.encode_request({"x": 1}, "s", "rows")
    with pytest.raises(ValueError, match="0 rows"):
        rest_json.encode_request({"x": np.zeros([0, 2])}, "s", "rows")
    with pytest.raises(ValueError, match="format must be"):
        rest_json.encode_request({"x": [1]}, "s", "csv")


def test_decode_request_asks_for_the_named_signature():
    asked = []

    def specs(signature):
        asked.append(signature)
        if signature != "recommend":
            raise rest_json.RestError(400, f'Serving signature name: "{signature}" not found in signature def')
        return {"x": tf.TensorSpec([None], tf.int64)}

    assert rest_json.decode_request('{"signature_name": "recommend", "inputs": [1]}', specs)[0] == "recommend"
    with pytest.raises(rest_json.RestError, match='"nope" not found'):
        rest_json.decode_request('{"signature_name": "nope", "inputs": [1]}', specs)
    assert asked == ["recommend", "nope"]


# ----------------------------------------------------------------------------------------------
# Round trips

_SPECS = {"ids": ("int64", [-1]), "hist": ("int64", [-1, -1]), "score": ("float32", [-1, -1]),
          "flag": ("bool", [-1])}
_floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


@st.composite
def _batches(draw):
    b, h = draw(st.integers(1, 4)), draw(st.integers(0, 3))
    ints = st.integers(-(2**63), 2**63 - 1)
    return {"ids": draw(hnp.arrays(np.int64, (b,), elements=ints)),
            "hist": draw(hnp.arrays(np.int64, (b, h), elements=ints)),
            "score": draw(hnp.arrays(np.float32, (b, draw(st.integers(0, 3))), elements=_floats32)),
            "flag": draw(hnp.arrays(np.bool_, (b,)))}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_batches(), st.sampled_from(rest_json.FORMATS))
def test_request_round_trip(inputs, fmt):
    body = rest_json.encode_request(inputs, "recommend", fmt)
    signature, decoded, got_fmt = rest_json.decode_request(body, _SPECS)
    assert (signature, got_fmt) == ("recommend", fmt)
    for name, array in inputs.items():
        _assert_same(decoded[name], array, name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_batches(), st.sampled_from(rest_json.FORMATS))
def test_response_round_trip(outputs, fmt):
    dtypes = {name: spec[0] for name, spec in _SPECS.items()}
    decoded = rest_json.decode_response(rest_json.encode_response(outputs, fmt), dtypes)
    for name, array in outputs.items():
        _assert_same(decoded[name], array, name)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False), st.floats(width=32, allow_nan=False))
def test_format_float_round_trips(double, single):
    assert float(rest_json.format_float(double, double=True)) == double
    text = rest_json.format_float(np.float32(single))
    assert np.float32(float(text)) == np.float32(single)
    assert "." in text or "e" in text or "Infinity" in text


# ----------------------------------------------------------------------------------------------
# The doubles on a tiny hand-made SavedModel

K_PAD = -1


class _Tiny(tf.Module):
    """'recommend': history minus exclusions as the top-K (score id/10 + user_id, -inf padding);
    'serving_default': one float input, one output."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name=n) for n in F.USER_FEATURES]
                 + [tf.TensorSpec([None, None], tf.int64, name=n) for n in F.HISTORY_FEATURES]
                 + [tf.TensorSpec([None, None], tf.int64, name="exclude_video_id")])
    def recommend(self, user_id, device_id, age, gender, province, request_weekday, request_hour, request_minute,
                  hist_video_id, hist_author_id, hist_category_level_two, hist_category_level_one, hist_upload_type,
                  exclude_video_id=tf.zeros([1, 0], tf.int64)):
        hit = (hist_video_id[:, :, None] == exclude_video_id[:, None, :]) & (exclude_video_id[:, None, :] >= 0)
        valid = (hist_video_id >= 0) & ~tf.reduce_any(hit, axis=-1)
        scores = tf.cast(hist_video_id, tf.float32) / 10 + tf.cast(user_id, tf.float32)[:, None]
        return {"top_k_video_ids": tf.where(valid, hist_video_id, tf.constant(K_PAD, tf.int64)),
                "top_k_scores": tf.where(valid, scores, -np.inf)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def single(self, x):
        return {"scores": x * 2}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tiny") / "sm")
    module = _Tiny()
    tf.saved_model.save(module, path, signatures={"recommend": module.recommend, "serving_default": module.single})
    return path


@pytest.fixture(scope="module")
def rest(tiny_model):
    with RestDouble(tiny_model) as double:
        yield double


@pytest.fixture(scope="module")
def grpc_double(tiny_model):
    with PredictionServiceDouble(tiny_model) as double:
        yield double


def _post(port: int, path: str, body: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


USERS = {"user_id": [7, 8], "device_id": [1, 1], "age": [2, 3], "gender": [0, 1], "province": [4, 4],
         "request_weekday": [5, 6], "request_hour": [20, 3], "request_minute": [15, 59]}
HISTORY = {"hist_video_id": [[11, 12, -1], [13, 14, 15]], "hist_author_id": [[1, 1, -1], [2, 2, 2]],
           "hist_category_level_two": [[3, 3, -1], [4, 4, 4]], "hist_category_level_one": [[1, 1, -1], [2, 2, 2]],
           "hist_upload_type": [[0, 0, -1], [1, 1, 1]]}
WANT_IDS = np.array([[11, -1, -1], [13, 14, -1]])  # exclude [[12], [15]]
WANT_SCORES = np.array([[8.1, -np.inf, -np.inf], [9.3, 9.4, -np.inf]], np.float32)


def _recommend_inputs(exclude=((12,), (15,))):
    out = {k: np.array(v) for k, v in {**USERS, **HISTORY}.items()}
    if exclude is not None:
        out["exclude_video_id"] = np.array(exclude)
    return out


def test_tiny_model_records_the_default(tiny_model):
    sig = read_signature_defs(tiny_model)["recommend"]
    assert set(sig.defaults) == {"exclude_video_id"} and "exclude_video_id" in sig.inputs


@pytest.mark.parametrize("case", VECTORS["server"]["cases"], ids=lambda c: c["name"])
def test_rest_double_server_vectors(rest, case):
    status, text = _post(rest.port, case["path"], case.get("body", VECTORS["server"]["valid_body"]))
    assert status == case["status"], text
    if status != 200:
        assert case["message"] in json.loads(text)["error"]


@pytest.mark.parametrize("fmt", rest_json.FORMATS)
def test_rest_double_answers_in_the_request_format(rest, fmt):
    body = rest_json.encode_request(_recommend_inputs(), "recommend", fmt)
    status, text = _post(rest.port, "/v1/models/cascade:predict", body)
    assert status == 200, text
    assert json.loads(text).keys() == {"predictions" if fmt == "rows" else "outputs"}
    assert "-Infinity" in text and "-3.4e" not in text
    out = rest_json.decode_response(text, {"top_k_scores": np.float32})
    _assert_same(out["top_k_video_ids"], WANT_IDS)
    np.testing.assert_allclose(out["top_k_scores"], WANT_SCORES, rtol=1e-6)


def test_rest_double_single_input_and_output_are_bare(rest):
    status, text = _post(rest.port, "/v1/models/cascade:predict", '{"instances": [1.5, -Infinity]}')
    assert status == 200 and json.loads(text) == {"predictions": [3.0, -math.inf]}
    status, text = _post(rest.port, "/v1/models/cascade:predict", '{"inputs": [[1]]}')
    assert status == 400 and "compatible" in json.loads(text)["error"]  # rank 2 for a [None] input
    status, text = _post(rest.port, "/v1/models/cascade:predict", '{"inputs": 0.25}')
    assert status == 400  # a scalar for [None]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"inputs": {**USERS, **HISTORY, "user_id": [7.0, 8.0], "exclude_video_id": [[], []]}}, 400,
     "JSON Value: 7.0 Type: Number is not of expected type: int64"),
    ({"inputs": {**USERS, **HISTORY, "user_id": [7, 1.5], "exclude_video_id": [[], []]}}, 400,
     "JSON Value: 1.5 Type: Number is not of expected type: int64"),
    ({"inputs": {**USERS, **HISTORY}}, 400, "Missing named input: exclude_video_id in 'inputs' object."),
    ({"inputs": {**HISTORY, "exclude_video_id": [[]]}}, 400, "Missing named input: age in 'inputs' object."),
    ({"inputs": {**USERS, **HISTORY, "exclude_video_id": [[], [1, 2]]}}, 400, "Encountered list at unexpected size"),
    ({"instances": [{"user_id": 7, "bogus": 1}]}, 400, "does not have named input: bogus"),
    ({"instances": [{"user_id": 7}]}, 400, "keys must be equal to: age,device_id,exclude_video_id,gender,"),
])
def test_rest_double_refuses_as_tf_serving(rest, body, status, message):
    got, text = _post(rest.port, "/v1/models/cascade:predict", json.dumps({"signature_name": "recommend", **body}))
    assert got == status and message in json.loads(text)["error"], text


def test_rest_double_ignores_unknown_columnar_inputs_as_tf_serving(rest):
    inputs = {k: v.tolist() for k, v in _recommend_inputs().items()}
    status, text = _post(rest.port, "/v1/models/cascade:predict",
                         json.dumps({"signature_name": "recommend", "inputs": {**inputs, "bogus": [1]}}))
    assert status == 200, text


def test_rest_double_can_apply_signature_defaults(tiny_model):
    with RestDouble(tiny_model, rest_defaults=True) as double:
        for fmt in rest_json.FORMATS:
            body = rest_json.encode_request(_recommend_inputs(exclude=None), "recommend", fmt)
            status, text = _post(double.port, "/v1/models/cascade:predict", body)
            assert status == 200, text
            assert rest_json.decode_response(text)["top_k_video_ids"].tolist() == [[11, 12, -1], [13, 14, 15]]


def test_grpc_double_applies_defaults_and_refuses_bad_inputs(grpc_double):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_double.port}"))

    def call(inputs, signature="recommend", model="cascade"):
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = model, signature
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return stub.Predict(request, timeout=10)

    out = call(_recommend_inputs(exclude=None))  # the SignatureDef default: nothing excluded
    assert tf.make_ndarray(out.outputs["top_k_video_ids"]).tolist() == [[11, 12, -1], [13, 14, 15]]
    assert out.model_spec.version.value == 1
    cases = [
        (lambda: call({k: v for k, v in _recommend_inputs().items() if k != "age"}), "INVALID_ARGUMENT",
         "Signature input alias: age(feed name: recommend_age:0) not found in request and no default value"),
        (lambda: call({**_recommend_inputs(), "bogus": np.array([1])}), "INVALID_ARGUMENT",
         f"input size does not match signature: {len(_recommend_inputs()) + 1}!={len(_recommend_inputs())}"),
        (lambda: call({**_recommend_inputs(exclude=None), "bogus": np.array([1])}), "INVALID_ARGUMENT",
         "Inputs contains invalid name"),
        (lambda: call({**_recommend_inputs(), "user_id": np.array([7.0, 8.0])}), "INVALID_ARGUMENT",
         "input user_id: expected dtype int64, got float64"),
        (lambda: call(_recommend_inputs(), signature="nope"), "FAILED_PRECONDITION",
         'Serving signature key "nope" not found.'),
        (lambda: call(_recommend_inputs(), model="nope"), "NOT_FOUND", "Servable not found for request: Latest(nope)"),
    ]
    for fn, code, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            fn()
        assert info.value.code().name == code and message in info.value.details(), info.value.details()


# ----------------------------------------------------------------------------------------------
# The client against the doubles


@pytest.mark.parametrize(("protocol", "fmt"), [("grpc", "columnar"), ("rest", "columnar"), ("rest", "rows")])
def test_client_recommend(rest, grpc_double, protocol, fmt):
    port = grpc_double.port if protocol == "grpc" else rest.port
    client = CascadeClient("127.0.0.1", grpc_port=port, rest_port=port, timeout=10, retries=2, backoff=0.01,
                           rest_format=fmt)
    out = client.recommend(USERS, HISTORY, exclude=[[12], [15]], protocol=protocol)
    assert set(out) == {"top_k_video_ids", "top_k_scores"}
    assert out["top_k_video_ids"].dtype == np.int64 and out["top_k_scores"].dtype == np.float32
    _assert_same(out["top_k_video_ids"], WANT_IDS)
    np.testing.assert_allclose(out["top_k_scores"], WANT_SCORES, rtol=1e-6)
    # No exclusions: gRPC leaves the input out (its default applies), REST sends [B, 0].
    out = client.recommend(USERS, HISTORY, protocol=protocol)
    assert out["top_k_video_ids"].tolist() == [[11, 12, -1], [13, 14, 15]]
    # One [E] list applies to every request; a single request may be given flat.
    out = client.recommend(USERS, HISTORY, exclude=[12, 15], protocol=protocol)
    assert out["top_k_video_ids"].tolist() == [[11, -1, -1], [13, 14, -1]]
    one = client.recommend({k: v[0] for k, v in USERS.items()}, {k: v[0] for k, v in HISTORY.items()},
                           exclude=[], protocol=protocol)
    assert one["top_k_video_ids"].tolist() == [[11, 12, -1]]


@pytest.mark.parametrize("fmt", rest_json.FORMATS)
def test_client_rest_errors_carry_tf_serving_messages(rest, fmt):
    wrong = CascadeClient("127.0.0.1", rest_port=rest.port, model_name="nope", retries=0, rest_format=fmt)
    with pytest.raises(ServingError) as info:
        wrong.recommend(USERS, HISTORY, protocol="rest")
    assert info.value.code == 404 and info.value.server_message == "Servable not found for request: Latest(nope)"
    assert str(info.value).endswith(": Servable not found for request: Latest(nope)")
    client = CascadeClient("127.0.0.1", rest_port=rest.port, retries=0, backoff=0.01)
    with pytest.raises(ServingError, match="(?s)HTTP 400 .*(Missing named input: age|keys must be equal)"):
        client.call("recommend", {k: v for k, v in _recommend_inputs().items() if k != "age"}, "rest", fmt)
    with pytest.raises(ServingError, match='Serving signature name: "nope" not found'):
        client.call("nope", _recommend_inputs(), "rest", fmt)
    rest.model.fail_next = 2  # two 503s, then the answer
    retrying = CascadeClient("127.0.0.1", rest_port=rest.port, retries=2, backoff=0.01, rest_format=fmt)
    assert retrying.recommend(USERS, HISTORY, protocol="rest")["top_k_video_ids"].shape == (2, 3)
    rest.model.fail_next = 0


def test_client_calls_any_signature_and_checks_arguments(rest, grpc_double):
    rest_client = CascadeClient("127.0.0.1", rest_port=rest.port, retries=0)
    grpc_client = CascadeClient("127.0.0.1", grpc_port=grpc_double.port, retries=0)
    x = {"x": np.array([0.5, 2.0], np.float32)}
    want = grpc_client.call("serving_default", x)["scores"]
    for fmt in rest_json.FORMATS:
        _assert_same(rest_client.call("serving_default", x, "rest", fmt)["scores"], want)
    with pytest.raises(ValueError, match="rest_format"):
        CascadeClient(rest_format="xml")
    with pytest.raises(ValueError, match="exclude_video_id must hold integer ids"):
        rest_client.recommend(USERS, HISTORY, exclude=[1.5])
    with pytest.raises(ValueError, match="same batch size"):
        rest_client.recommend(USERS, HISTORY, exclude=[[1], [2], [3]])
    with pytest.raises(ValueError, match="missing input 'hist_author_id'"):
        rest_client.recommend(USERS, {"hist_video_id": [1]})
