"""The `autoscaling:` block of a deployment or version: one pydantic model, validated once at the YAML boundary.

Every knob has a default and a description; durations are seconds, bounded and finite. `deploy/spec.py` attaches
this model to deployments and versions; the scaler and the pure policy read it as it is (it is frozen).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["AutoscalingConfig", "AutoscalingConfigError", "parse_autoscaling"]

_DAY = 86_400.0
_WEEK = 7 * _DAY


class AutoscalingConfigError(ValueError):
    """An invalid `autoscaling:` block; the message names the field and the reason."""


class AutoscalingConfig(BaseModel):
    """How one deployment version is scaled. Defaults suit a model with a start-up of seconds to a minute."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # --- the count -------------------------------------------------------------------------------------------
    min_replicas: int = Field(1, ge=0, le=10_000, description="fewest replicas; 0 needs scale_to_zero: true")
    max_replicas: int = Field(8, ge=1, le=10_000, description="most replicas; must be >= min_replicas")
    initial_replicas: int | None = Field(
        None, ge=0, le=10_000, description="replicas at deploy time, before any metric (default: min_replicas, "
                                           "at least 1)")
    target_ongoing_requests: float = Field(
        8.0, gt=0, le=100_000, description="in-flight requests (running plus queued) wanted per replica")

    # --- reactive signal ---------------------------------------------------------------------------------------
    stable_window_s: float = Field(
        30.0, ge=2, le=3600, description="look-back of the averaged in-flight count that sets the target normally")
    panic_window_s: float = Field(
        3.0, ge=1, le=600, description="short look-back used to catch bursts; must be <= stable_window_s")
    panic_threshold: float = Field(
        1.5, gt=1, le=100, description="enter panic mode when the panic window wants this many times the ready "
                                       "replicas; in panic the target only goes up")
    backlog_drain_s: float = Field(
        10.0, ge=1, le=3600, description="queued requests count as load to be cleared within this many seconds "
                                         "(so a queue built during start-up does not ask for the maximum)")

    # --- pacing of changes -------------------------------------------------------------------------------------
    upscale_delay_s: float = Field(
        0.0, ge=0, le=3600, description="a higher target must be wanted this long before it is applied")
    downscale_delay_s: float = Field(
        150.0, ge=0, le=_DAY, description="a lower target must be wanted this long before it is applied (the "
                                          "target is the highest wanted within this look-back)")
    max_scale_up_rate: float = Field(
        10.0, ge=1, le=1000, description="largest factor the target may grow by per second (one more replica "
                                        "is always allowed)")
    max_scale_down_rate: float = Field(
        2.0, ge=1, le=1000, description="largest factor the target may shrink by per minute, once scaling down")
    upscale_tolerance: float = Field(
        0.05, ge=0, le=1, description="outside panic, scale up only when wanted exceeds the current count by more "
                                      "than this fraction (as Kubernetes' HPA tolerance), so a few percent of "
                                      "drift does not reverse a scale-down")
    hysteresis: float = Field(
        0.15, ge=0, lt=1, description="scale down only to ceil(wanted * (1 + hysteresis)): a margin so that a "
                                     "small rise right after does not scale up again")

    # --- scale to zero -----------------------------------------------------------------------------------------
    scale_to_zero: bool = Field(False, description="allow 0 replicas after scale_to_zero_delay_s without traffic")
    scale_to_zero_delay_s: float = Field(
        60.0, ge=0, le=_WEEK, description="seconds with no arrival and nothing in flight before going to 0 (as "
                                          "Knative's 60 s stable window); requests that arrive at 0 are held "
                                          "by the routers while the first replica starts")

    # --- predictive signal -------------------------------------------------------------------------------------
    forecast: bool = Field(True, description="pre-scale from the arrivals forecast over the replica start-up time")
    season_length_s: float = Field(
        _DAY, ge=60, le=_WEEK, description="period of the traffic cycle the forecast looks for (a day by default)")
    forecast_bucket_s: float = Field(
        60.0, ge=1, le=3600, description="arrivals are summed over buckets of this length for the forecast")
    refit_interval_s: float = Field(
        600.0, ge=10, le=_DAY, description="how often the forecast model is refitted; in between it is updated "
                                           "with each new bucket")
    history_s: float = Field(
        3 * _DAY, ge=600, le=30 * _DAY, description="arrival history kept (memory and Redis) for the forecast")
    startup_prior_s: float = Field(
        30.0, ge=0, le=3600, description="start-up lead time assumed until the first start-up has been observed; "
                                         "replaced by the measured one")
    max_forecast_ratio: float = Field(
        4.0, ge=1, le=100, description="the forecast may raise the load estimate by at most this factor")

    # --- optional extra signals --------------------------------------------------------------------------------
    target_latency_s: float | None = Field(
        None, gt=0, le=3600, description="optional: scale up while this latency quantile is over target")
    latency_quantile: Literal["p50", "p90", "p99"] = Field(
        "p99", description="which reported latency quantile target_latency_s applies to")
    target_cpu_utilization: float | None = Field(
        None, gt=0, le=1, description="optional: mean replica CPU use wanted (0-1], as Kubernetes' HPA does")

    @model_validator(mode="after")
    def _consistent(self) -> "AutoscalingConfig":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        if self.min_replicas == 0 and not self.scale_to_zero:
            raise ValueError("min_replicas: 0 needs scale_to_zero: true")
        if self.initial_replicas is not None and not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(f"initial_replicas ({self.initial_replicas}) must be within min_replicas "
                             f"({self.min_replicas}) and max_replicas ({self.max_replicas})")
        if self.panic_window_s > self.stable_window_s:
            raise ValueError(f"panic_window_s ({self.panic_window_s}) must be <= stable_window_s "
                             f"({self.stable_window_s})")
        if self.forecast_bucket_s * 4 > self.season_length_s:
            raise ValueError(f"season_length_s ({self.season_length_s}) must hold at least 4 forecast buckets "
                             f"of forecast_bucket_s ({self.forecast_bucket_s})")
        return self

    @property
    def start_replicas(self) -> int:
        """Replicas to start with before any metric arrives."""
        if self.initial_replicas is not None:
            return self.initial_replicas
        return max(self.min_replicas, 1)


def parse_autoscaling(data: dict, source: str = "autoscaling") -> AutoscalingConfig:
    """Validate a mapping; raise AutoscalingConfigError with one 'source.field: reason' line per problem."""
    try:
        return AutoscalingConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item["loc"])
            lines.append(f"{source}{'.' + where if where else ''}: {item['msg'].removeprefix('Value error, ')}")
        raise AutoscalingConfigError("\n".join(lines)) from None
