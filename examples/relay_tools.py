"""Tool calling through an OpenAI-compatible relay (LiteLLM, one-api, …).

Offline by default; set RELAY_API_KEY / RELAY_BASE_URL (and RELAY_MODEL) for a real relay.
    python examples/relay_tools.py
"""

import os

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool

from dify_lc import ChatRelay
from dify_lc.testing import endpoint_or_fake


@tool
def order_status(order_id: str) -> str:
    """Look up the status of an order."""
    return f"order {order_id} ships tomorrow"


with endpoint_or_fake("relay") as relay:
    model = ChatRelay(
        model=os.environ.get("RELAY_MODEL", "gpt-4o"),
        base_url=relay.base_url,
        api_key=relay.api_key,
    )
    with_tools = model.bind_tools([order_status])
    question = HumanMessage("Use the tool: where is order 42?")
    reply = with_tools.invoke([question])
    print("tool calls:", reply.tool_calls)
    results = [
        ToolMessage(order_status.invoke(call["args"]), tool_call_id=call["id"])
        for call in reply.tool_calls
    ]
    print("answer:", with_tools.invoke([question, reply, *results]).content)
