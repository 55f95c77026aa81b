"""Small pickles lose their frame header and still load as what they were."""
from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasknest.protocol.serialize import dumps_call, loads_call, unframed

pytestmark = pytest.mark.timeout(60)


class NoFuture:
    """The future type for calls that hold none."""

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(values)
def test_any_value_loads_the_same_without_its_frame(value):
    data = pickle.dumps(value, protocol=5)
    small = unframed(data)
    assert pickle.loads(small) == value
    if len(data) <= 64 and data[2] == 0x95:     # framed and small: 9 bytes fewer
        assert len(small) == len(data) - 9
    else:
        assert small is data


@settings(max_examples=200, deadline=None)
@given(st.lists(values, max_size=3), st.dictionaries(st.text(max_size=4), values, max_size=2))
def test_a_call_round_trips(args, kwargs):
    data, deps, futures = dumps_call(tuple(args), kwargs, NoFuture)
    assert (deps, futures) == ([], [])
    assert loads_call(data, {}) == (tuple(args), kwargs)


def test_a_small_call_keeps_no_frame():
    data, _, _ = dumps_call((123456,), {}, NoFuture)
    assert data[2] != 0x95 and pickle.loads(data) == ((123456,), None)
