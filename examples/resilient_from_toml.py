"""A resilient model from routes.toml: the official Dify channel, a relay canary, fallbacks.

Offline by default: the routes point at fake servers and the official channel fails 40% of
the time, like the outage in the story. With DIFY_API_KEY and RELAY_API_KEY set,
examples/routes.toml is used as it is.
    python examples/resilient_from_toml.py
"""

import os
import tomllib
from pathlib import Path

import dify_lc
from dify_lc.testing import Chaos, Fault, endpoint_or_fake

ROUTES = Path(__file__).with_name("routes.toml")

if os.environ.get("DIFY_API_KEY") and os.environ.get("RELAY_API_KEY"):
    model = dify_lc.from_config(ROUTES)
    print(model.invoke("Where is my order?", user="customer-42").content)
else:
    with endpoint_or_fake("dify") as dify, endpoint_or_fake("relay") as relay:
        assert dify.server is not None
        dify.server.set_chaos(Chaos(faults=[(0.4, Fault.server_error(503))]))
        config = tomllib.loads(ROUTES.read_text())  # the same file, pointed at the fakes
        config["routes"][0]["base_url"] = dify.base_url
        config["routes"][1]["base_url"] = relay.base_url
        env = {"DIFY_API_KEY": dify.api_key, "RELAY_API_KEY": relay.api_key}
        model = dify_lc.from_config(config, env=env)
        model.use_clock(__import__("time").monotonic, sleep=lambda s: None)  # no real backoff
        served: dict[str, int] = {}
        for i in range(40):
            answer = model.invoke("Where is my order?", user=f"customer-{i}")
            route = answer.response_metadata["route"]
            served[route] = served.get(route, 0) + 1
        print("answered 40/40, served by:", served)
        attempts = model.metrics.snapshot()["routes"]
        print("official success rate:", f"{attempts['official']['success_rate']:.0%}")
