"""Chaos profiles: seeded, reproducible success rates and latencies."""

from __future__ import annotations

import random

import httpx
import pytest

from dify_lc.testing import Chaos, FakeRelay, Fault, LogNormal


def test_draws_are_reproducible_and_match_the_rates() -> None:
    chaos = Chaos(
        faults=[(0.2, Fault.server_error(503)), (0.1, Fault(hang=True))],
        first_token=LogNormal(0.05, 1.0, cap=1.0),
    )
    a = [chaos.draw(random.Random(7)) for _ in range(1)]
    b = [chaos.draw(random.Random(7)) for _ in range(1)]
    assert a == b
    rng = random.Random(1)
    draws = [chaos.draw(rng) for _ in range(20_000)]
    assert sum(d.status == 503 for d in draws) / 20_000 == pytest.approx(0.2, abs=0.015)
    assert sum(d.hang for d in draws) / 20_000 == pytest.approx(0.1, abs=0.01)
    assert all((d.first_token_delay or d.delay or 0) <= 1.0 for d in draws)
    assert chaos.success_rate == pytest.approx(0.7)


def test_probabilities_are_checked() -> None:
    with pytest.raises(ValueError, match="add up"):
        Chaos(faults=[(0.7, Fault()), (0.5, Fault())])


def test_server_applies_chaos() -> None:
    with FakeRelay(api_key="sk-chaos", seed=5) as relay:
        relay.set_chaos(Chaos(faults=[(0.5, Fault.server_error(500))]))
        with httpx.Client() as client:
            codes = [
                client.post(
                    f"{relay.base_url}/chat/completions",
                    headers={"authorization": "Bearer sk-chaos"},
                    json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                ).status_code
                for _ in range(100)
            ]
    assert 30 < codes.count(500) < 70
    assert set(codes) == {200, 500}
