"""The Prometheus text exposition."""

from __future__ import annotations

import pytest

from entroguard.serve.metrics import Registry, ServerMetrics


def test_counter_and_gauge_exposition():
    r = Registry()
    c = r.counter("x_total", "Things.", ("reason",))
    c.inc(reason="a")
    c.inc(2, reason='we"ird\\n\n')
    g = r.gauge("y", "A level.")
    g.set(1.5)
    text = r.render()
    assert "# HELP x_total Things.\n# TYPE x_total counter\n" in text
    assert 'x_total{reason="a"} 1\n' in text
    assert 'x_total{reason="we\\"ird\\\\n\\n"} 2\n' in text
    assert "# TYPE y gauge\ny 1.5\n" in text
    assert text.endswith("\n")
    with pytest.raises(ValueError):
        c.inc(-1, reason="a")
    with pytest.raises(ValueError):
        c.inc(other="a")


def test_histogram_is_cumulative_with_sum_and_count():
    r = Registry()
    h = r.histogram("t_seconds", "Time.", ("route",), buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 0.5, 3.0):
        h.observe(v, route="/a")
    lines = r.render().splitlines()
    assert 't_seconds_bucket{route="/a",le="0.1"} 1' in lines
    assert 't_seconds_bucket{route="/a",le="1"} 3' in lines
    assert 't_seconds_bucket{route="/a",le="+Inf"} 4' in lines
    assert 't_seconds_sum{route="/a"} 4.05' in lines
    assert 't_seconds_count{route="/a"} 4' in lines
    assert h.count(route="/a") == 4


def test_names_are_unique():
    r = Registry()
    r.counter("a", "A.")
    with pytest.raises(ValueError):
        r.gauge("a", "again")


def test_server_metrics_render_parses_line_by_line():
    m = ServerMetrics()
    m.requests.inc(route="/v1/infer", status="200")
    m.rejections.inc(reason="checksum")
    m.request_seconds.observe(0.003, route="/v1/infer")
    for line in m.render().splitlines():
        assert line.startswith("# ") or line.startswith("entroguard_")
        if not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            float(value.replace("+Inf", "inf"))
