"""Pipeline specs: the `pipelines:` section of the platform YAML, validated once into frozen pydantic models.

    pipelines:
      - name: clicks
        sources:
          - {name: web, stream: events:web}        # a Redis Stream read with a consumer group
          - {name: app, http: true}                # POST /-/events/clicks/app appends to the pipeline's stream
        stages:
          - {name: only_buys, filter: "event.kind == 'buy' and event.amount > 0"}
          - {name: enrich, convert: my_pkg.stages:enrich}          # or a mapping {field: expression}
          - {name: pair, join: {sources: [web, app], key: user, window_s: 30, unmatched: emit_left}}
        sink: {stream: events:bought}              # or {deployment: name} or {webhook: URL on the allow list}

Each stage is one of `filter`, `convert`, `join`, `custom`; anything else is refused naming the field. Filter
expressions and convert mappings are compiled here, so a bad expression fails the spec, not the first event.
Webhook URLs are checked against the operator's allow list when the caller passes one in the validation context
(`parse_pipelines(data, webhook_allowlist=[...])`); the sink checks again when it sends.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.events.expression import ExpressionError, compile_expression

__all__ = [
    "PipelineSpecError", "SourceSpec", "FilterStage", "ConvertStage", "JoinSpec", "JoinStage", "CustomStage",
    "StageSpec", "SinkSpec", "PipelineSpec", "parse_pipelines", "is_import_path", "webhook_allowed",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
STAGE_KINDS = ("filter", "convert", "join", "custom")


class PipelineSpecError(ValueError):
    """An invalid pipeline spec. The message names the source, the field and the reason."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} must be 1-63 letters, digits, '_' or '-', starting with a letter or digit")
    return value


def is_import_path(text: str) -> bool:
    """'package.module:name' (an expression never contains ':' outside a string, so this is unambiguous)."""
    return bool(_IMPORT_PATH.match(text))


def _check_expression(text: str, field: str) -> str:
    try:
        compile_expression(text)
    except ExpressionError as exc:
        raise ValueError(f"{field} {text!r}: {exc}") from None
    return text


def webhook_allowed(url: str, allowlist: tuple[str, ...] | list[str]) -> bool:
    """True when `url` starts with one of the allowed prefixes (compared up to a path boundary)."""
    for prefix in allowlist:
        if url == prefix or (url.startswith(prefix) and (prefix.endswith("/") or url[len(prefix)] in "/?")):
            return True
    return False


class SourceSpec(_Model):
    name: str = Field(description="source name, unique in the pipeline; events carry it as `source`")
    stream: str | None = Field(None, description="Redis Stream key read with the pipeline's consumer group")
    http: bool = Field(False, description="true: POST /-/events/<pipeline>/<name> appends to the pipeline's stream")

    _name = field_validator("name")(lambda cls, v: _check_name(v, "source name"))

    @model_validator(mode="after")
    def _one_kind(self) -> "SourceSpec":
        if (self.stream is None) == (not self.http):
            raise ValueError("a source needs exactly one of `stream: <key>` or `http: true`")
        if self.stream is not None and not self.stream.strip():
            raise ValueError("stream key must not be empty")
        return self


class _Stage(_Model):
    name: str = Field(description="stage name, unique in the pipeline; also names its deployment")
    num_replicas: int = Field(1, ge=1, description="replicas of the stage's deployment")
    sources: tuple[str, ...] | None = Field(None, description="apply only to events of these sources; "
                                            "others pass through unchanged (default: all)")

    _name = field_validator("name")(lambda cls, v: _check_name(v, "stage name"))


class FilterStage(_Stage):
    filter: str = Field(description="an expression over `event` fields, or 'package.module:predicate'")

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str) -> str:
        return value if is_import_path(value) else _check_expression(value, "filter expression")


class ConvertStage(_Stage):
    convert: str | dict[str, str] = Field(description="'package.module:function' (data -> data), or a mapping "
                                          "{output field: expression over the input event}")

    @field_validator("convert")
    @classmethod
    def _convert(cls, value):
        if isinstance(value, str):
            if not is_import_path(value):
                raise ValueError(f"convert {value!r} must be 'package.module:function' or a field mapping")
            return value
        if not value:
            raise ValueError("a convert field mapping needs at least one field")
        for field, text in value.items():
            if not field or field.startswith("_"):
                raise ValueError(f"convert field name {field!r} must be non-empty and not start with '_'")
            _check_expression(text, f"convert field {field!r}")
        return value


class JoinSpec(_Model):
    sources: tuple[str, ...] = Field(description="two or more declared sources; the first is the 'left' one")
    key: str = Field(description="data field whose value must be equal across the joined events")
    window_s: float = Field(gt=0, le=86400, description="events join when their times are at most this far apart; "
                            "a partial group expires this long after its first event")
    unmatched: Literal["emit_left", "emit", "drop", "dead_letter"] = Field(
        "drop", description="on expiry: emit_left (emit if the left source is present), emit (emit any partial "
        "group), drop (acknowledge and forget), dead_letter (send to the dead-letter stream)")
    max_pending: int = Field(100_000, ge=1, description="partial groups held at most; beyond, the oldest expire early")
    remember_s: float = Field(300.0, gt=0, description="resolved events are remembered this long so a replay "
                              "re-emits the same output; keep above the pipeline's claim_idle_s")

    @field_validator("sources")
    @classmethod
    def _sources(cls, value):
        if len(value) < 2:
            raise ValueError("a join needs at least two sources")
        if len(set(value)) != len(value):
            raise ValueError("join sources must be distinct")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not value or value.startswith("_"):
            raise ValueError(f"join key {value!r} must be a non-empty field name not starting with '_'")
        return value


class JoinStage(_Stage):
    join: JoinSpec = Field(description="join events of several sources by key within a time window")
    num_replicas: Literal[1] = Field(1, description="a join keeps its window in one replica's memory")


class CustomStage(_Stage):
    custom: str = Field(description="'package.module:Class' taking a batch {'events': [...]} and returning "
                        "{'events': [...], 'dead': [...]}")
    init_kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the class")

    @field_validator("custom")
    @classmethod
    def _custom(cls, value: str) -> str:
        if not is_import_path(value):
            raise ValueError(f"custom {value!r} must look like 'package.module:Name'")
        return value


StageSpec = FilterStage | ConvertStage | JoinStage | CustomStage
_STAGE_MODELS = {"filter": FilterStage, "convert": ConvertStage, "join": JoinStage, "custom": CustomStage}


class SinkSpec(_Model):
    stream: str | None = Field(None, description="Redis Stream key the results are appended to (deduplicated)")
    deployment: str | None = Field(None, description="deployment called with each result batch {'events': [...]}")
    app: str | None = Field(None, description="app of `deployment` (default: the pipeline's own app)")
    webhook: str | None = Field(None, description="http(s) URL POSTed each result batch; must be on the allow list")
    dedupe_ttl_s: float = Field(600.0, gt=0, description="how long an output id is remembered for deduplication "
                                "(one Redis key per output: memory = output rate x this); replays later than "
                                "this would duplicate")
    maxlen: int | None = Field(None, gt=0, description="stream sink: keep about this many entries (XADD MAXLEN ~)")

    @model_validator(mode="after")
    def _one_kind(self, info: ValidationInfo) -> "SinkSpec":
        kinds = [k for k in ("stream", "deployment", "webhook") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("a sink needs exactly one of `stream`, `deployment` or `webhook`")
        if self.webhook is not None:
            if not self.webhook.startswith(("http://", "https://")):
                raise ValueError(f"webhook {self.webhook!r} must be an http:// or https:// URL")
            allowlist = (info.context or {}).get("webhook_allowlist")
            if allowlist is not None and not webhook_allowed(self.webhook, allowlist):
                raise ValueError(f"webhook {self.webhook!r} is not on the allowed list")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("stream", "deployment", "webhook") if getattr(self, k))


class PipelineSpec(_Model):
    name: str = Field(description="pipeline name, unique in the spec; names its app, group and streams")
    sources: tuple[SourceSpec, ...] = Field(description="where events come from (at least one)")
    stages: tuple[StageSpec, ...] = Field(default=(), description="processing stages, in order")
    sink: SinkSpec = Field(description="where results go")
    batch_size: int = Field(64, ge=1, le=10_000, description="entries read per XREADGROUP")
    max_in_flight: int = Field(4, ge=1, le=256, description="batches in the stages at once (backpressure bound)")
    block_ms: int = Field(5, ge=1, le=10_000, description="XREADGROUP BLOCK: how long a read waits for events")
    claim_idle_s: float = Field(30.0, gt=0, description="entries pending this long on any consumer are reclaimed")
    max_retries: int = Field(3, ge=0, description="retries of a failing stage call before an event is dead-lettered")
    max_body_bytes: int = Field(64 * 1024, gt=0, description="largest event accepted by HTTP sources (413)")
    max_backlog: int = Field(1_000_000, gt=0, description="HTTP sources answer 503 while their stream holds this "
                             "many entries not yet acknowledged (consumers down or far behind)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        _check_name(value, "pipeline name")
        if len(value) > 40:
            raise ValueError(f"pipeline name {value!r} is longer than 40 characters (it prefixes app and key names)")
        return value

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_kinds(cls, value):
        if not isinstance(value, (list, tuple)):
            return value
        out = []
        for index, stage in enumerate(value):
            if isinstance(stage, BaseModel) or not isinstance(stage, dict):
                out.append(stage)
                continue
            kinds = [k for k in STAGE_KINDS if k in stage]
            if len(kinds) != 1:
                unknown = sorted(set(stage) - {"name", "num_replicas", "sources", "init_kwargs"})
                raise ValueError(f"stages[{index}] ({stage.get('name', '?')}): unknown stage type "
                                 f"{', '.join(unknown) or '(none given)'}; expected exactly one of "
                                 f"{', '.join(STAGE_KINDS)}")
            try:
                out.append(_STAGE_MODELS[kinds[0]].model_validate(stage))
            except ValidationError as exc:
                raise ValueError("; ".join(
                    f"stages[{index}].{'.'.join(map(str, e['loc'])) or kinds[0]}: "
                    f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())) from None
        return tuple(out)

    @model_validator(mode="after")
    def _references(self) -> "PipelineSpec":
        if not self.sources:
            raise ValueError("a pipeline needs at least one source")
        for what, names in (("source", [s.name for s in self.sources]), ("stage", [s.name for s in self.stages])):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{what} names must be unique; repeated: {', '.join(repeated)}")
        declared = {s.name for s in self.sources}
        for index, stage in enumerate(self.stages):
            used = stage.join.sources if isinstance(stage, JoinStage) else ()
            field = "join.sources" if used else "sources"
            for name in (*used, *(stage.sources or ())):
                if name not in declared:
                    raise ValueError(f"stages[{index}].{field}: {name!r} is not a declared source "
                                     f"({', '.join(sorted(declared))})")
        return self

    @model_validator(mode="after")
    def _dedupe_outlives_replays(self) -> "PipelineSpec":
        if self.sink.dedupe_ttl_s < 2 * self.claim_idle_s:
            raise ValueError(f"sink.dedupe_ttl_s ({self.sink.dedupe_ttl_s}) must be at least twice claim_idle_s "
                             f"({self.claim_idle_s}): replays come after claim_idle_s and must still be recognised")
        for index, stage in enumerate(self.stages):
            if isinstance(stage, JoinStage) and stage.join.remember_s < 2 * self.claim_idle_s:
                raise ValueError(f"stages[{index}].join.remember_s ({stage.join.remember_s}) must be at least twice "
                                 f"claim_idle_s ({self.claim_idle_s}), so a replayed event re-emits its output")
        return self

    def source(self, name: str) -> SourceSpec | None:
        return next((s for s in self.sources if s.name == name), None)


def _format_errors(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = ""
        for part in item["loc"]:
            if isinstance(part, str) and part.endswith("Stage"):
                continue  # the union member's class name is noise; the stage index is already there
            location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
        lines.append(f"{source}: {location or '<root>'}: {item['msg'].removeprefix('Value error, ')}")
    return "\n".join(dict.fromkeys(lines))


def parse_pipelines(data: Any, source: str = "<spec>", webhook_allowlist: list[str] | None = None
                    ) -> tuple[PipelineSpec, ...]:
    """Validate the `pipelines:` list; raise PipelineSpecError naming source, field and reason."""
    if data is None:
        return ()
    if not isinstance(data, (list, tuple)):
        raise PipelineSpecError(f"{source}: pipelines: must be a list, got {type(data).__name__}")
    context = {"webhook_allowlist": webhook_allowlist} if webhook_allowlist is not None else None
    out, errors = [], []
    for index, item in enumerate(data):
        try:
            out.append(PipelineSpec.model_validate(item, context=context))
        except ValidationError as exc:
            errors.append(_format_errors(f"{source}: pipelines[{index}]", exc))
    names = [p.name for p in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        errors.append(f"{source}: pipelines: names must be unique; repeated: {', '.join(repeated)}")
    if errors:
        raise PipelineSpecError("\n".join(errors))
    return tuple(out)
