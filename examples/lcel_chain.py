"""ChatDify in an LCEL chain: prompt | model | parser.

Offline by default (a fake Dify on loopback); set DIFY_API_KEY (and DIFY_BASE_URL) to use a
real Dify app.    python examples/lcel_chain.py
"""

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from dify_lc import ChatDify
from dify_lc.testing import endpoint_or_fake

with endpoint_or_fake("dify") as dify:
    model = ChatDify(base_url=dify.base_url, api_key=dify.api_key, user="example-user")
    prompt = ChatPromptTemplate.from_messages([("human", "Answer in one sentence: {question}")])
    chain = prompt | model | StrOutputParser()
    print(chain.invoke({"question": "where is my order?"}))
    print(chain.batch([{"question": "a refund?"}, {"question": "opening hours?"}]))
