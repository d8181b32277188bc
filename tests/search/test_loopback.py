"""A local search listens on loopback only, starts its own Ray whatever else runs on the machine,
and serves its dashboard on 127.0.0.1 (checked on the session's quick demo while it ran)."""

from __future__ import annotations

import pytest

from tests.search.conftest import NOWHERE, QuickDemo, is_loopback

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_every_socket_of_the_quick_demo_listens_on_loopback(quick_demo: QuickDemo) -> None:
    names = {name for name, _, _ in quick_demo.listening}
    # the sample saw Ray's own servers: a test that saw nothing would prove nothing
    assert {"gcs_server", "raylet"} <= names, sorted(quick_demo.listening)
    assert len(quick_demo.listening) >= 8, sorted(quick_demo.listening)
    outside = sorted(s for s in quick_demo.listening if not is_loopback(s[1]))
    assert not outside, f"listening beyond loopback: {outside}"


def test_the_demo_started_its_own_ray_and_served_its_dashboard_on_loopback(quick_demo: QuickDemo) -> None:
    # RAY_ADDRESS and ray_current_cluster named a Ray that is not there: joining it would have failed
    assert NOWHERE not in quick_demo.output
    assert quick_demo.dashboard is not None and quick_demo.dashboard.startswith("http://127.0.0.1:")
    assert quick_demo.dashboard_status in (200, 401)  # 401: it answers, and wants the token
    port = int(quick_demo.dashboard.rsplit(":", 1)[1])
    assert {ip for _, ip, p in quick_demo.listening if p == port} <= {"127.0.0.1", "::ffff:127.0.0.1"}
