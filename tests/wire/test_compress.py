"""The lossy delta codecs ``int8`` and ``topk:<density>``: round trips, exact sizes, error feedback, and
adversarial payloads (every refusal is a WireError, never another exception)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from p2pfl.identity import Identity
from p2pfl.wire import (
    Header,
    PayloadSizes,
    SchemaError,
    WireError,
    apply_codec,
    decode_tensors,
    encode_tensors,
    is_codec,
    payload_size,
    undo_codec,
)
from p2pfl.wire.compress import INDEX, SCALE, feedback_step, topk_count, topk_density

LOSSY = ("int8", "topk:0.1", "topk:0.01", "topk:0.5", "topk:1")

_floats = st.floats(-1e4, 1e4, allow_nan=False, width=32)
_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9)


@st.composite
def models(draw: st.DrawFn) -> dict[str, npt.NDArray[Any]]:
    """A few named tensors: mostly float32, sometimes float64/float16 or an integer buffer."""
    out: dict[str, npt.NDArray[Any]] = {}
    for i in range(draw(st.integers(1, 4))):
        dtype = draw(st.sampled_from([np.float32, np.float32, np.float64, np.int64]))
        if dtype is np.int64:
            arr = draw(hnp.arrays(dtype, _shapes, elements=st.integers(-100, 100)))
        else:
            arr = draw(hnp.arrays(dtype, _shapes, elements=_floats))
        out[f"layer{i}.w"] = arr
    return out


def _wire_trip(tensors: dict[str, npt.NDArray[Any]], codec: str) -> dict[str, npt.NDArray[Any]]:
    return undo_codec(decode_tensors(encode_tensors(apply_codec(tensors, codec))), codec, tensors)


@settings(max_examples=150, deadline=None)
@given(models(), st.sampled_from(LOSSY))
def test_round_trip_keeps_layout_and_bounds_the_error(model: dict[str, npt.NDArray[Any]], codec: str) -> None:
    back = _wire_trip(model, codec)
    assert back.keys() == model.keys()
    for name, arr in model.items():
        got = back[name]
        assert got.shape == arr.shape and got.dtype == arr.dtype
        if arr.dtype.kind != "f":
            assert np.array_equal(got, arr)
            continue
        x = arr.astype(np.float64).reshape(-1)
        y = got.astype(np.float64).reshape(-1)
        peak = float(np.abs(x).max()) if x.size else 0.0
        if codec == "int8":  # half a quantisation step per value (plus float32 rounding of the scale)
            assert np.all(np.abs(x - y) <= peak / 254 * 1.001 + 1e-30)
        else:  # kept values to float16 precision, the rest zero; never more than k non-zeros
            k = topk_count(x.size, topk_density(codec) or 0)
            assert np.count_nonzero(y) <= k
            kept = y != 0
            assert np.allclose(y[kept], x[kept], rtol=1e-3, atol=1e-7)
            if x.size and k:  # no dropped value is larger than a kept one
                dropped = np.abs(x[~kept]) if (~kept).any() else np.zeros(1)
                assert dropped.max() <= np.sort(np.abs(x))[-k] * (1 + 1e-3) + 1e-7


@settings(max_examples=100, deadline=None)
@given(models(), st.sampled_from(("raw", "fp16", *LOSSY)))
def test_payload_size_is_known_from_the_layout(model: dict[str, npt.NDArray[Any]], codec: str) -> None:
    """A receiver requires this exact size of a delta before fetching it: computed, never encoded."""
    size = len(encode_tensors(apply_codec(model, codec)))
    assert payload_size(codec, model) == size
    assert PayloadSizes(model).get(codec) == size


def test_compression_ratios_on_the_workload_mlp() -> None:
    rng = np.random.default_rng(0)
    model = {
        "0.w": rng.normal(size=(64, 32)).astype(np.float32),
        "0.b": rng.normal(size=32).astype(np.float32),
        "1.w": rng.normal(size=(32, 10)).astype(np.float32),
        "1.b": rng.normal(size=10).astype(np.float32),
    }
    raw = payload_size("raw", model)
    assert payload_size("int8", model) < raw / 3.5
    assert payload_size("topk:0.1", model) < raw / 8


def test_codec_names() -> None:
    for ok in ("raw", "fp16", "int8", "topk:0.1", "topk:0.05", "topk:0.0001", "topk:1"):
        assert is_codec(ok), ok
    for bad in (
        "topk",
        "topk:0",
        "topk:0.0",
        "topk:0.10",
        "topk:1.0",
        "topk:2",
        "topk:.1",
        "topk:0.00001",
        "topk:-0.1",
        "topk:0.1 ",
        "int4",
        "",
        None,
        3,
    ):
        assert not is_codec(bad), bad
        assert PayloadSizes({"w": np.zeros(3, np.float32)}).get(bad) is None  # type: ignore[arg-type]
    with pytest.raises(SchemaError):
        apply_codec({"w": np.zeros(3, np.float32)}, "topk:0.10")
    h = dict(
        kind="delta",
        network_id="n",
        sender=Identity(bytes(32)).peer_id,
        seq=1,
        base=bytes(32),
        result=bytes(32),
        arch=bytes(32),
        payload_digest=bytes(32),
        payload_size=1,
        timestamp_ms=0,
    )
    Header(codec="topk:0.1", **h)  # type: ignore[arg-type]
    with pytest.raises(SchemaError):
        Header(codec="topk:3", **h)  # type: ignore[arg-type]


def test_sender_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(WireError):
        apply_codec({"w": np.array([np.nan, 1.0], np.float32)}, "int8")
    # kept values travel as float16, clipped to its range (never refused: the sender's round must go on;
    # error feedback sends the excess later)
    big = _wire_trip({"w": np.array([1e6, 1.0], np.float32)}, "topk:0.5")["w"]
    assert big.tolist() == [65504.0, 0.0]
    with pytest.raises(SchemaError):
        apply_codec({"w": np.zeros(2, np.float32), "w#idx": np.zeros(2, np.float32)}, "topk:0.5")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(LOSSY), st.integers(1, 400), st.integers(0, 2**32 - 1))
def test_error_feedback_delivers_everything_eventually(codec: str, size: int, seed: int) -> None:
    """Sending ``target - reference`` against the receivers' reconstruction never loses what a codec drops:
    with the target fixed, the reference converges to it (top-k: exactly, after ceil(1/density) steps on
    values that float16 holds exactly)."""
    rng = np.random.default_rng(seed)
    target = rng.integers(-64, 64, size=size).astype(np.float32) / 8  # exact in float16 and int8 steps
    like = {"w": target}

    def compress(delta: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return _wire_trip({"w": delta}, codec)["w"]

    reference = np.zeros(size, np.float32)
    steps = 12 if codec == "int8" else int(np.ceil(1 / (topk_density(codec) or 1))) + 1
    errors = []
    for _ in range(steps):
        _, reference = feedback_step(target, reference, compress)
        errors.append(float(np.abs(target - reference).max()))
    assert errors[-1] <= errors[0]
    if codec == "int8":
        assert errors[-1] <= float(np.abs(target).max()) / 127**2 + 1e-6
    else:
        assert errors[-1] == 0.0
    assert like["w"] is target


def test_without_feedback_topk_loses_the_tail() -> None:
    """The control: compressing the target itself each time (no reference) never delivers the small values."""
    target = np.arange(1, 101, dtype=np.float32)
    sent = _wire_trip({"w": target}, "topk:0.1")["w"]
    assert np.count_nonzero(sent) == 10 and float(np.abs(target - sent).max()) == 90.0


# ------------------------------------------------------------------------------------------- adversarial
LIKE = {"a": np.zeros((3, 4), np.float32), "b": np.zeros(300, np.float32), "n": np.zeros(2, np.int64)}


def _good(codec: str) -> dict[str, npt.NDArray[Any]]:
    rng = np.random.default_rng(1)
    model = {
        k: (rng.normal(size=v.shape).astype(v.dtype) if v.dtype.kind == "f" else v) for k, v in LIKE.items()
    }
    return dict(decode_tensors(encode_tensors(apply_codec(model, codec))))


def _refused(tensors: dict[str, npt.NDArray[Any]], codec: str) -> WireError:
    with pytest.raises(WireError) as info:
        undo_codec(decode_tensors(encode_tensors(tensors)), codec, LIKE)
    return info.value


@pytest.mark.parametrize("codec", ["int8", "topk:0.1"])
def test_wrong_entry_sets_are_refused(codec: str) -> None:
    good = _good(codec)
    companion = "a" + (SCALE if codec == "int8" else INDEX)
    missing = {k: v for k, v in good.items() if k != companion}
    assert _refused(missing, codec).reason == "schema"
    assert _refused({**good, "zzz": np.zeros(1, np.float32)}, codec).reason == "schema"
    assert _refused({**good, "a": good["a"].astype(np.float32)}, codec).reason == "bad_dtype"
    assert (
        _refused(
            {**good, "a": np.concatenate([good["a"].reshape(-1), good["a"].reshape(-1)[:1]])}, codec
        ).reason
        == "bad_shape"
    )
    # the right set for another codec is the wrong set for this one
    other = "topk:0.1" if codec == "int8" else "int8"
    assert _refused(_good(other), codec).reason in ("schema", "bad_dtype", "bad_shape")


def test_int8_scale_must_be_a_finite_non_negative_float32() -> None:
    good = _good("int8")
    assert _refused({**good, "a#scale": np.array(-1.0, np.float32)}, "int8").reason == "schema"
    assert _refused({**good, "a#scale": np.array(1.0, np.float64)}, "int8").reason == "bad_dtype"
    # a huge scale overflows the model's float32 when applied
    assert _refused({**good, "a#scale": np.array(3e38, np.float32)}, "int8").reason == "non_finite"


def test_topk_indices_must_be_strictly_increasing_and_in_range() -> None:
    good = _good("topk:0.1")
    idx = good["b#idx"].copy()  # 30 int16 indices into 300 values
    for bad in (
        idx[::-1].copy(),
        np.full_like(idx, idx[0]),
        np.where(np.arange(idx.size) == 29, 300, idx),
        np.where(np.arange(idx.size) == 0, -1, idx),
    ):
        assert _refused({**good, "b#idx": bad.astype(idx.dtype)}, "topk:0.1").reason == "schema"
    small = good["a#idx"].copy()  # uint8 indices into 12 values: 255 is out of range
    small[-1] = 255
    assert _refused({**good, "a#idx": small}, "topk:0.1").reason == "schema"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["int8", "topk:0.1"]), st.data())
def test_any_mutated_payload_is_a_value_or_a_wire_error(codec: str, data: st.DataObject) -> None:
    """Totality: arbitrary replacement tensors (any dtype, shape, values) never raise anything else."""
    good = _good(codec)
    name = data.draw(st.sampled_from([*sorted(good), "extra"]))
    dtype = data.draw(st.sampled_from(["<f2", "<f4", "<f8", "i1", "u1", "<i2", "<i4", "<i8"]))
    arr = data.draw(hnp.arrays(np.dtype(dtype), hnp.array_shapes(min_dims=0, max_dims=2, max_side=40)))
    tensors = {**good, name: arr}
    try:
        payload = encode_tensors(tensors)
    except WireError:
        return  # e.g. NaN: the sender side refuses it already
    try:
        out = undo_codec(decode_tensors(payload), codec, LIKE)
    except WireError:
        return
    assert out.keys() == LIKE.keys()
    for k, v in out.items():
        assert v.shape == LIKE[k].shape and v.dtype == LIKE[k].dtype
        assert np.isfinite(v).all() if v.dtype.kind == "f" else True
