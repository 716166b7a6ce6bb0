"""Event pipelines: sources (Redis Streams, HTTP), stages (filter, convert, join, custom) run as deployments, and a
consumer that delivers results to a deduplicating sink at least once. See docs/events.md."""

from gateway.events.eventing import ConsumerSettings, PipelineConsumer
from gateway.events.expression import (
    EvaluationError,
    ExpressionError,
    compile_expression,
)
from gateway.events.ingest import EventRejected, append_event
from gateway.events.spec import PipelineSpec, PipelineSpecError, parse_pipelines
from gateway.events.stages import StageDeployment, pipeline_app_name, stage_deployments
from gateway.events.status import pipeline_status

__all__ = [
    "PipelineSpec", "PipelineSpecError", "parse_pipelines", "compile_expression", "ExpressionError",
    "EvaluationError", "PipelineConsumer", "ConsumerSettings", "append_event", "EventRejected", "pipeline_status",
    "StageDeployment", "stage_deployments", "pipeline_app_name",
]
