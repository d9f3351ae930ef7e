"""A Dify workflow as a Runnable in a chain, invoked and streamed.

Offline by default; set DIFY_WORKFLOW_API_KEY (and DIFY_BASE_URL) for a real workflow app.
    python examples/workflow_chain.py
"""

from langchain_core.runnables import RunnableLambda

from dify_lc import DifyWorkflow
from dify_lc.testing import endpoint_or_fake

with endpoint_or_fake("workflow") as app:
    workflow = DifyWorkflow(base_url=app.base_url, api_key=app.api_key, user="example-user")
    chain = RunnableLambda(lambda topic: {"topic": topic}) | workflow | (lambda out: out["text"])
    print(chain.invoke("shipping delays"))
    for item in workflow.stream({"topic": "refunds"}):
        if item["event"] == "text_chunk":
            print(item["text"], end="", flush=True)
        elif item["event"] == "workflow_finished":
            print(f"\n[{item['status']}]")
