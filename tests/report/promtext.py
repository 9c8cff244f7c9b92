"""Parse Prometheus text exposition into samples, for assertions on what /metrics really serves."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = dict[str, str]


def samples(text: str) -> dict[str, list[tuple[Labels, float]]]:
    """Sample name -> [(labels, value)] (counters appear as ``..._total``, histograms as ``..._bucket``)."""
    out: dict[str, list[tuple[Labels, float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of ``name`` whose labels include ``labels``; None when absent."""
    found = [v for ls, v in samples(text).get(name, []) if all(ls.get(k) == x for k, x in labels.items())]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


def label_sets(text: str, name: str) -> list[Labels]:
    return [ls for ls, _ in samples(text).get(name, [])]
