"""Test your own pipeline against realistic failures, offline: copy this into your tests.

pytest examples/test_with_fake_server.py
"""

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from dify_lc import ChatDify, ChatRelay, ResilientChatModel, StreamInterruptedError
from dify_lc.testing import FakeDify, FakeRelay, Fault


@pytest.fixture
def dify():
    with FakeDify(api_key="app-test") as server:
        yield server


def my_pipeline(model):
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    return prompt | model | StrOutputParser()


def test_pipeline_survives_a_throttled_dify(dify):
    dify.enqueue(Fault.dify_concurrency_limit(), Fault.server_error(503))
    model = ChatDify(api_key="app-test", base_url=dify.base_url)
    assert my_pipeline(model).invoke({"question": "hi"})
    assert len(dify.requests) == 3  # two failures retried, then the answer


def test_a_cut_stream_never_looks_like_a_short_answer(dify):
    dify.enqueue(Fault(inband_error_after=3))
    model = ChatDify(api_key="app-test", base_url=dify.base_url)
    with pytest.raises(StreamInterruptedError) as info:
        list(my_pipeline(model).stream({"question": "hi"}))
    assert info.value.partial_text


def test_fallback_to_the_relay(dify):
    dify.set_default(Fault(status=401))
    with FakeRelay(api_key="sk-test") as relay:
        model = ResilientChatModel(
            ChatDify(api_key="app-test", base_url=dify.base_url),
            [ChatRelay(model="gpt-4o", api_key="sk-test", base_url=relay.base_url)],
        )
        assert my_pipeline(model).invoke({"question": "hi"})
