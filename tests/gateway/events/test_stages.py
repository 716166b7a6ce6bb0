"""Stage templates: batches in, batches out, bad events to dead letters with a reason; deployments per stage."""

from __future__ import annotations

import pytest
import yaml

from gateway.events.spec import parse_pipelines
from gateway.events.stages import (
    Convert,
    Custom,
    Filter,
    StageOutputError,
    stage_deployments,
)

SAMPLE = "tests.gateway.events.sample_stages"


def ev(i, source="web", **data):
    return {"id": f"{source}:{i}-0", "source": source, "ts": float(i), "data": data}


def test_filter_expression_keeps_matching_and_dead_letters_missing_fields():
    """Events that fail to evaluate go to dead letters naming the stage and the missing field."""
    stage = Filter("event.kind == 'buy' and event.amount > 0", name="only_buys")
    out = stage({"events": [ev(1, kind="buy", amount=3), ev(2, kind="view", amount=3), ev(3, kind="buy")]})
    assert [e["id"] for e in out["events"]] == ["web:1-0"]
    assert out["dead"] == [{"id": "web:3-0", "source": "web", "stage": "only_buys",
                            "reason": "only_buys: missing field 'amount'", "data": {"kind": "buy"}}]


def test_filter_by_import_path_and_source_restriction():
    """A predicate by import path; events of other sources pass untouched."""
    stage = Filter(f"{SAMPLE}:is_big", sources=["web"])
    out = stage({"events": [ev(1, amount=50), ev(2, amount=5), ev(3, "app", amount=1)]})
    assert [e["id"] for e in out["events"]] == ["web:1-0", "app:3-0"]


def test_convert_function_keeps_identity_drops_none_and_dead_letters_errors():
    stage = Convert(f"{SAMPLE}:enrich", name="enrich")
    out = stage({"events": [ev(1, amount=1.5), ev(2, amount=1, drop=True), ev(3, amount=1, boom=True)]})
    assert out["events"] == [{"id": "web:1-0", "source": "web", "ts": 1.0, "data": {"amount": 1.5, "cents": 150}}]
    assert [(d["id"], d["reason"]) for d in out["dead"]] == [("web:3-0", "enrich: RuntimeError: enrich failed")]


def test_convert_field_mapping():
    stage = Convert({"user": "event.uid", "cents": "event.amount * 100", "src": "source"})
    out = stage({"events": [ev(1, uid="u", amount=2), ev(2, amount=2)]})
    assert out["events"][0]["data"] == {"user": "u", "cents": 200, "src": "web"}
    assert out["dead"][0]["reason"].endswith("missing field 'uid'")


def test_convert_must_produce_a_mapping():
    stage = Convert({"x": "event.a"})
    assert stage({"events": [ev(1, a=1)]})["events"][0]["data"] == {"x": 1}
    bad = Convert("builtins:len")
    assert "must produce a mapping" in bad({"events": [ev(1, a=1)]})["dead"][0]["reason"]


async def test_custom_class_function_and_async():
    """Custom stages by import path: a sync class with init kwargs stays sync (worker threads); an async class
    gives an async stage (the replica awaits it); a wrong answer shape raises."""
    import inspect

    score = Custom(f"{SAMPLE}:Score", {"factor": 2.0}, sources=["web"])
    assert not inspect.iscoroutinefunction(score.__call__)
    out = score({"events": [ev(1, amount=3), ev(2, "app", amount=3)]})
    assert [e["data"].get("score") for e in out["events"]] == [None, 6.0]  # passing events come first
    tagger = Custom(f"{SAMPLE}:AsyncTag")
    assert inspect.iscoroutinefunction(tagger.__call__)
    tagged = await tagger({"events": [ev(1)]})
    assert tagged["events"][0]["data"]["tag"] == "async" and tagged["dead"] == []
    with pytest.raises(StageOutputError):
        Custom(f"{SAMPLE}:explode")({"events": [ev(1)]})


def test_stage_rejects_a_payload_that_is_not_a_batch():
    with pytest.raises(ValueError, match="expects"):
        Filter("event.a == 1")({"items": []})


def test_stage_deployments_name_the_template_and_kwargs():
    """Each stage becomes a deployment in the pipeline's app; kwargs construct the template class."""
    doc = yaml.safe_load("""
    - name: clicks
      sources: [{name: web, stream: events:web}, {name: app, http: true}]
      stages:
        - {name: only_buys, filter: "event.kind == 'buy'", num_replicas: 3}
        - {name: enrich, convert: tests.gateway.events.sample_stages:enrich}
        - {name: pair, join: {sources: [web, app], key: user, window_s: 30, unmatched: emit_left}}
        - {name: score, custom: tests.gateway.events.sample_stages:Score, init_kwargs: {factor: 2}}
      sink: {stream: out}
    """)
    deployments = stage_deployments(parse_pipelines(doc)[0])
    assert [(d.app, d.deployment, d.import_path, d.num_replicas) for d in deployments] == [
        ("events-clicks", "only_buys", "gateway.events.stages:Filter", 3),
        ("events-clicks", "enrich", "gateway.events.stages:Convert", 1),
        ("events-clicks", "pair", "gateway.events.stages:Join", 1),
        ("events-clicks", "score", "gateway.events.stages:Custom", 1),
    ]
    assert deployments[2].init_kwargs == {"sources": ["web", "app"], "key": "user", "window_s": 30.0,
                                          "unmatched": "emit_left", "max_pending": 100000, "remember_s": 300.0,
                                          "name": "pair"}
    from gateway.events.stages import resolve_import_path
    for d in deployments:  # the kwargs really construct the classes
        resolve_import_path(d.import_path)(**d.init_kwargs)


def test_platform_loader_constructs_every_stage_template():
    """replicas.callable.load_callable (what a replica runs) builds each stage from its deployment kwargs and
    picks sync or async the way the replica will run it."""
    from replicas.callable import load_callable

    doc = [{"name": "p", "sources": [{"name": "web", "stream": "w"}, {"name": "app", "http": True}],
            "stages": [{"name": "f", "filter": "event.a == 1"}, {"name": "c", "convert": {"b": "event.a"}},
                       {"name": "j", "join": {"sources": ["web", "app"], "key": "a", "window_s": 1}},
                       {"name": "s", "custom": f"{SAMPLE}:AsyncTag"}],
            "sink": {"stream": "out"}}]
    loaded = [load_callable(d.import_path, (), d.init_kwargs) for d in stage_deployments(parse_pipelines(doc)[0])]
    assert [u.is_async for u in loaded] == [False, False, False, True]
    assert loaded[0].target({"events": [ev(1, a=1), ev(2, a=2)]})["events"][0]["id"] == "web:1-0"
