"""Pipeline specs: the issue's YAML example validates; bad specs are refused naming the field."""

from __future__ import annotations

import pytest
import yaml

from gateway.events.spec import (
    ConvertStage,
    FilterStage,
    JoinStage,
    PipelineSpecError,
    parse_pipelines,
    webhook_allowed,
)

EXAMPLE = """
pipelines:
  - name: clicks
    sources:
      - {name: web, stream: events:web}
      - {name: app, http: true}
    stages:
      - {name: only_buys, filter: "event.kind == 'buy' and event.amount > 0"}
      - {name: enrich, convert: my_pkg.stages:enrich}
      - {name: pair, join: {sources: [web, app], key: user, window_s: 30, unmatched: emit_left}}
    sink: {stream: events:bought}
"""


def example(**changes) -> dict:
    doc = yaml.safe_load(EXAMPLE)["pipelines"][0]
    doc.update(changes)
    return doc


def refused(doc, **kwargs) -> str:
    with pytest.raises(PipelineSpecError) as info:
        parse_pipelines([doc], "pipes.yaml", **kwargs)
    return str(info.value)


def test_issue_example_validates():
    """The YAML of the issue parses into the three stage kinds, in order, with the join's settings."""
    (pipeline,) = parse_pipelines(yaml.safe_load(EXAMPLE)["pipelines"])
    assert [type(s) for s in pipeline.stages] == [FilterStage, ConvertStage, JoinStage]
    assert pipeline.stages[2].join.sources == ("web", "app")
    assert pipeline.stages[2].join.unmatched == "emit_left"
    assert pipeline.sources[1].http and pipeline.sink.kind == "stream"


def test_convert_field_mapping_and_custom_stage():
    doc = example(stages=[{"name": "shape", "convert": {"user": "event.user_id", "cents": "event.amount * 100"}},
                          {"name": "mine", "custom": "my_pkg.stages:Score", "init_kwargs": {"k": 1}}])
    (pipeline,) = parse_pipelines([doc])
    assert pipeline.stages[0].convert == {"user": "event.user_id", "cents": "event.amount * 100"}
    assert pipeline.stages[1].init_kwargs == {"k": 1}


def test_unknown_stage_type_is_refused_naming_it():
    msg = refused(example(stages=[{"name": "x", "frobnicate": "a"}]))
    assert "pipes.yaml: pipelines[0]" in msg and "stages[0]" in msg and "unknown stage type frobnicate" in msg


def test_two_stage_types_in_one_stage_are_refused():
    msg = refused(example(stages=[{"name": "x", "filter": "event.a == 1", "convert": "a.b:c"}]))
    assert "stages[0]" in msg and "exactly one of" in msg


def test_bad_filter_expression_is_refused_naming_field_and_column():
    msg = refused(example(stages=[{"name": "ok", "filter": "event.a == 1"},
                                  {"name": "bad", "filter": "event.__class__ == 1"}]))
    assert "stages[1].filter" in msg and "column 1" in msg and "'_'" in msg


def test_bad_convert_mapping_is_refused_naming_the_output_field():
    msg = refused(example(stages=[{"name": "c", "convert": {"user": "open('x')"}}]))
    assert "stages[0].convert" in msg and "convert field 'user'" in msg


def test_join_over_undeclared_source_is_refused():
    msg = refused(example(stages=[{"name": "j", "join": {"sources": ["web", "mobile"], "key": "u",
                                                         "window_s": 5}}]))
    assert "stages[0].join.sources" in msg and "'mobile' is not a declared source" in msg


@pytest.mark.parametrize("join, fragment", [
    ({"sources": ["web"], "key": "u", "window_s": 5}, "at least two sources"),
    ({"sources": ["web", "app"], "key": "u", "window_s": 0}, "window_s"),
    ({"sources": ["web", "app"], "key": "u", "window_s": 5, "unmatched": "keep"}, "unmatched"),
    ({"sources": ["web", "web"], "key": "u", "window_s": 5}, "distinct"),
    ({"sources": ["web", "app"], "key": "_u", "window_s": 5}, "join key"),
])
def test_bad_join_settings_are_refused(join, fragment):
    msg = refused(example(stages=[{"name": "j", "join": join}]))
    assert "stages[0]" in msg and fragment in msg


def test_source_needs_exactly_one_kind():
    msg = refused(example(sources=[{"name": "web", "stream": "s", "http": True}]))
    assert "sources[0]" in msg and "exactly one" in msg
    msg = refused(example(sources=[{"name": "web"}]))
    assert "sources[0]" in msg


def test_stage_sources_must_be_declared():
    msg = refused(example(stages=[{"name": "f", "filter": "event.a == 1", "sources": ["nope"]}]))
    assert "stages[0].sources" in msg and "'nope'" in msg


def test_duplicate_names_are_refused():
    assert "repeated: web" in refused(example(sources=[{"name": "web", "stream": "a"},
                                                       {"name": "web", "stream": "b"}]))
    with pytest.raises(PipelineSpecError, match="names must be unique; repeated: clicks"):
        parse_pipelines([example(), example()])


def test_sink_needs_exactly_one_kind_and_webhook_on_allow_list():
    assert "sink" in refused(example(sink={"stream": "a", "deployment": "b"}))
    assert "http:// or https://" in refused(example(sink={"webhook": "ftp://x"}))
    msg = refused(example(sink={"webhook": "https://evil.example/hook"}),
                  webhook_allowlist=["https://hooks.example.com/"])
    assert "sink" in msg and "not on the allowed list" in msg
    (ok,) = parse_pipelines([example(sink={"webhook": "https://hooks.example.com/a"})],
                            webhook_allowlist=["https://hooks.example.com/"])
    assert ok.sink.kind == "webhook"


def test_webhook_allow_list_matches_on_path_boundaries():
    allow = ["https://hooks.example.com", "http://127.0.0.1:9000/in/"]
    assert webhook_allowed("https://hooks.example.com/x", allow)
    assert not webhook_allowed("https://hooks.example.com.evil.net/x", allow)
    assert webhook_allowed("http://127.0.0.1:9000/in/a", allow)
    assert not webhook_allowed("http://127.0.0.1:9000/internal", allow)


def test_unknown_pipeline_field_and_bad_name_are_refused():
    assert "extra" in refused(example(retention=3)).lower()
    assert "pipeline name" in refused(example(name="bad name"))


def test_pipelines_must_be_a_list():
    with pytest.raises(PipelineSpecError, match="must be a list"):
        parse_pipelines({"name": "x"})
    assert parse_pipelines(None) == ()


def test_dedupe_window_must_outlive_replays():
    """Replays come after claim_idle_s; a dedupe TTL shorter than that could not recognise them."""
    msg = refused(example(claim_idle_s=60, sink={"stream": "out", "dedupe_ttl_s": 90}))
    assert "dedupe_ttl_s" in msg and "claim_idle_s" in msg


def test_join_memory_must_outlive_replays():
    msg = refused(example(claim_idle_s=200, sink={"stream": "out", "dedupe_ttl_s": 900}))
    assert "stages[2].join.remember_s" in msg
