"""Stream tokens to the terminal as Dify sends them, then show usage and metadata.

Offline by default; set DIFY_API_KEY / DIFY_BASE_URL for a real app.
    python examples/streaming.py
"""

from dify_lc import ChatDify
from dify_lc.testing import endpoint_or_fake

with endpoint_or_fake("dify", chunk_delay=0.02) as dify:
    model = ChatDify(base_url=dify.base_url, api_key=dify.api_key, user="example-user")
    total = None
    for chunk in model.stream("Tell me about your return policy"):
        print(chunk.content, end="", flush=True)
        total = chunk if total is None else total + chunk
    print()
    assert total is not None
    print("usage:", total.usage_metadata)
    print("conversation:", total.response_metadata["conversation_id"])
