"""The app spec: YAML in, validated once into frozen models, errors naming the file, the field and the reason."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from autoscale.config import AutoscalingConfig
from gateway.events.spec import PipelineSpec
from planner.allocation.scenario import ScenarioSpec

__all__ = [
    "DEFAULT_MAX_REPLICAS",
    "MAX_DURATION_S",
    "MAX_WEIGHT",
    "AppSpec",
    "DeploymentSpec",
    "Duration",
    "GatewaySpec",
    "ReplicaCount",
    "ResolvedVersion",
    "Resources",
    "RuntimeEnv",
    "Spec",
    "SpecError",
    "VersionSpec",
    "Weight",
    "format_validation_error",
    "load_spec",
    "parse_spec",
    "resolve_versions",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")

# Bounds on numbers a spec (or an admin request) may carry. The channel packs deadlines in milliseconds in
# a uint32 (about 49 days); durations stop far below that.
MAX_DURATION_S = 3600.0  # longest request timeout, hedge delay or other duration in a spec
MAX_WEIGHT = 1_000_000.0  # largest traffic weight of one version
DEFAULT_MAX_REPLICAS = 64  # default cap on the replicas of one version (`max_replicas`)
MAX_REPLICAS_LIMIT = 1024  # `max_replicas` itself stays below this

# Typed, finite, bounded: `true`, "2", null, [1], NaN and infinities are refused (no coercion).
Weight = Annotated[float, Field(strict=True, ge=0, le=MAX_WEIGHT, allow_inf_nan=False)]
ReplicaCount = Annotated[int, Field(strict=True, ge=0, le=MAX_REPLICAS_LIMIT)]
Duration = Annotated[float, Field(strict=True, gt=0, le=MAX_DURATION_S, allow_inf_nan=False)]


class SpecError(ValueError):
    """An invalid spec. The message names the source, the field and the reason."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} must be 1-63 letters, digits, '_' or '-', starting with a letter or digit")
    return value


class Resources(_Model):
    num_cpus: float = Field(0.25, ge=0, le=1024, allow_inf_nan=False, description="CPUs reserved per replica")
    num_gpus: float = Field(0, ge=0, le=64, allow_inf_nan=False, description="GPUs reserved per replica")
    memory: int | None = Field(None, gt=0, description="bytes of memory reserved per replica")


class RuntimeEnv(_Model):
    env_vars: dict[str, str] = Field(default_factory=dict, description="environment variables of the replica process")
    pip: list[str] = Field(default_factory=list, description="packages installed into the replica's own environment")
    working_dir: str | None = Field(None, description="local directory (or URI) shipped to the replica as its cwd")
    py_modules: list[str] = Field(default_factory=list, description="extra local modules shipped to the replica")

    def to_ray(self) -> dict:
        env: dict[str, Any] = {}
        if self.env_vars:
            env["env_vars"] = dict(self.env_vars)
        if self.pip:
            env["pip"] = list(self.pip)
        if self.working_dir:
            env["working_dir"] = self.working_dir
        if self.py_modules:
            env["py_modules"] = list(self.py_modules)
        return env


class VersionSpec(_Model):
    name: str = Field(description="version name, e.g. v1")
    weight: Weight = Field(100.0, description="relative share of the deployment's traffic (0 to 1e6)")
    num_replicas: ReplicaCount | None = Field(None, description="replicas of this version (default: the deployment's)")
    import_path: str | None = Field(None, description="code of this version (default: the deployment's)")
    init_args: list[Any] | None = Field(None, description="positional init arguments (default: the deployment's)")
    init_kwargs: dict[str, Any] | None = Field(None, description="keyword init arguments (default: the deployment's)")
    resources: Resources | None = Field(None, description="per-replica resources (default: the deployment's)")
    runtime_env: RuntimeEnv | None = Field(None, description="runtime environment (default: the deployment's)")
    mirror_percent: float = Field(0.0, ge=0, le=100, allow_inf_nan=False,
                                  description="share of primary traffic copied to this version")
    autoscaling: AutoscalingConfig | None = Field(
        None, description="scale this version from its load (overrides the deployment's block as a whole); "
                          "its replicas start at autoscaling's initial count and num_replicas is not used")

    _name = field_validator("name")(lambda cls, v: _check_name(v, "version name"))


class DeploymentSpec(_Model):
    name: str = Field(description="deployment name, unique within the app")
    import_path: str = Field(description="'package.module:Class' or 'package.module:function'")
    init_args: list[Any] = Field(default_factory=list, description="positional arguments for the class")
    init_kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the class")
    num_replicas: ReplicaCount = Field(1, description="replicas per version unless the version says otherwise")
    max_replicas: int = Field(DEFAULT_MAX_REPLICAS, strict=True, ge=1, le=MAX_REPLICAS_LIMIT,
                              description="cap on the replicas of one version, in the spec and for `raygate scale`")
    resources: Resources = Field(default_factory=Resources, description="per-replica resources")
    runtime_env: RuntimeEnv = Field(default_factory=RuntimeEnv, description="per-replica runtime environment")
    max_ongoing_requests: int = Field(32, ge=1, le=100_000, description="requests one replica runs at once")
    max_queued_requests: int = Field(256, ge=0, le=1_000_000,
                                     description="requests a gateway queues for this deployment; then 503")
    request_timeout_s: Duration = Field(30.0, description="deadline of one request, retries included (504); "
                                        "at most 3600")
    idempotent: bool | None = Field(None, description="retry any method after a replica failure (default: GET/HEAD only)")
    allow_pinning: bool = Field(True, description="honour the X-Raygate-Version request header")
    max_retries: int = Field(3, ge=0, le=100, description="retries after a replica failure (idempotent requests)")
    hedge_after_s: Duration | None = Field(None, description="idempotent only: also send to a second replica "
                                           "when the first has not answered after this long; first answer wins")
    versions: tuple[VersionSpec, ...] = Field(default=(), description="live versions; default one version 'v1'")
    autoscaling: AutoscalingConfig | None = Field(
        None, description="scale every version from its load (docs/autoscaling.md); without it num_replicas is "
                          "fixed")

    _name = field_validator("name")(lambda cls, v: _check_name(v, "deployment name"))

    @field_validator("import_path")
    @classmethod
    def _import_path(cls, value: str) -> str:
        module, sep, attr = value.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"import_path {value!r} must look like 'package.module:Name'")
        return value

    @model_validator(mode="after")
    def _versions(self) -> DeploymentSpec:
        if not self.versions:
            object.__setattr__(self, "versions", (VersionSpec(name="v1"),))
        names = [v.name for v in self.versions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"version names must be unique; repeated: {', '.join(duplicates)}")
        if not any(v.weight > 0 for v in self.versions):
            raise ValueError("at least one version needs a positive weight")
        too_many = [v.name for v in self.versions
                    if (v.num_replicas if v.num_replicas is not None else self.num_replicas) > self.max_replicas]
        if too_many:
            raise ValueError(f"num_replicas of version(s) {', '.join(too_many)} above max_replicas "
                             f"({self.max_replicas})")
        too_many = [v.name for v in self.versions if (v.autoscaling or self.autoscaling)
                    and (v.autoscaling or self.autoscaling).max_replicas > self.max_replicas]
        if too_many:
            raise ValueError(f"autoscaling.max_replicas of version(s) {', '.join(too_many)} above max_replicas "
                             f"({self.max_replicas})")
        for version in self.versions:
            if version.import_path is not None:
                self._import_path(version.import_path)
        return self


class AppSpec(_Model):
    name: str = Field(description="app name")
    route_prefix: str | None = Field(description="HTTP path prefix served by the app, e.g. /linear; null: an "
                                     "internal app, reached only through handles (pipeline stages, ensemble parts)")
    ingress: str = Field(description="deployment that receives the app's HTTP requests")
    deployments: tuple[DeploymentSpec, ...] = Field(description="the app's deployments (at least one)")

    _name = field_validator("name")(lambda cls, v: _check_name(v, "app name"))

    @field_validator("route_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or value.startswith("/-/") or value == "/-" or value.startswith("/metrics"):
            raise ValueError(f"route_prefix {value!r} must start with '/' and must not be under /-/ or /metrics")
        return value.rstrip("/") or "/"

    @model_validator(mode="after")
    def _ingress(self) -> AppSpec:
        names = [d.name for d in self.deployments]
        if not names:
            raise ValueError("an app needs at least one deployment")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"deployment names must be unique; repeated: {', '.join(duplicates)}")
        if self.ingress not in names:
            raise ValueError(f"ingress {self.ingress!r} is not one of the app's deployments ({', '.join(names)})")
        return self


class GatewaySpec(_Model):
    """HTTP gateway settings. Field names match `gateway.config.GatewayConfig`, which is derived from this."""

    num_gateways: StrictInt | Literal["auto"] = Field(
        "auto", description="gateway processes per node sharing the port (SO_REUSEPORT): a number (1-64), or "
        "\"auto\" for one per core of the node, at least 2 (so losing one process refuses no connection), "
        "at most 8 (the cap: more processes than that only contend for the same cores)")
    host: str = Field("127.0.0.1", description="bind address; loopback unless set explicitly")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port")
    max_body_bytes: int = Field(1 << 20, gt=0, le=1 << 30, description="largest request body accepted (413 above)")
    access_log: bool = Field(True, description="one structured JSON log line per request")
    header_timeout_s: float = Field(10.0, gt=0, le=3600, description="a connection that has not sent a complete "
                                    "request head this long after opening or after its last answer is closed")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="longest body read on control and admin "
                                  "paths; proxied requests read their body within their own deadline (408 after)")
    max_connections: int = Field(4096, ge=1, le=1 << 20, description="open connections per gateway process; "
                                 "more are answered 503 and closed")
    drain_s: float = Field(1.0, ge=0, le=600, description="minimum time a stopping gateway stays not-ready")
    drain_timeout_s: float = Field(30.0, gt=0, le=3600, description="longest wait for in-flight requests "
                                   "when a gateway stops")
    metrics_flush_s: float = Field(0.25, gt=0, le=60, description="how often each gateway writes its buffered "
                                   "metrics to the node's shared metric files (what /metrics serves)")

    @field_validator("num_gateways")
    @classmethod
    def _gateway_count(cls, value: int | str) -> int | str:
        if value != "auto" and not 1 <= value <= 64:
            raise ValueError(f"num_gateways must be \"auto\" or a number from 1 to 64, not {value!r}")
        return value


class Spec(_Model):
    apps: tuple[AppSpec, ...] = Field(default=(), description="apps to run")
    gateway: GatewaySpec = Field(default_factory=GatewaySpec, description="HTTP gateway settings")
    scenarios: tuple[ScenarioSpec, ...] = Field(default=(), description="online allocation scenarios: each is "
                                                "served by an allocator app `alloc-<name>` and planned nearline")
    pipelines: tuple[PipelineSpec, ...] = Field(default=(), description="event pipelines: each stage runs as a "
                                                "deployment of the internal app `events-<name>`")

    @model_validator(mode="after")
    def _unique(self) -> Spec:
        names = [a.name for a in self.apps]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"app names must be unique; repeated: {', '.join(duplicates)}")
        generated = {f"alloc-{s.name}" for s in self.scenarios} | {f"events-{p.name}" for p in self.pipelines}
        reserved = sorted(n for n in names if n.startswith(("alloc-", "events-")) and n not in generated)
        if reserved:
            raise ValueError(f"app names starting with 'alloc-' or 'events-' are the platform's (a scenario's or a "
                             f"pipeline's app); rename: {', '.join(reserved)}")
        for what, items in (("scenario", self.scenarios), ("pipeline", self.pipelines)):
            item_names = [item.name for item in items]
            repeated = sorted({n for n in item_names if item_names.count(n) > 1})
            if repeated:
                raise ValueError(f"{what} names must be unique; repeated: {', '.join(repeated)}")
        prefixes = [a.route_prefix for a in self.apps if a.route_prefix is not None]
        prefixes += [s.route_prefix.rstrip("/") or "/" for s in self.scenarios
                     if f"alloc-{s.name}" not in names]
        duplicates = sorted({p for p in prefixes if prefixes.count(p) > 1})
        if duplicates:
            raise ValueError(f"route prefixes must be unique; repeated: {', '.join(duplicates)}")
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def format_validation_error(source: str, error: ValidationError) -> str:
    """One line per error: '<source>: <field path>: <reason>'."""
    lines = []
    for item in error.errors():
        location = ""
        for part in item["loc"]:
            location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {location or '<root>'}: {message}")
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "<spec>") -> Spec:
    """Validate a parsed YAML/JSON document; raise SpecError naming source, field and reason."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source}: <root>: a spec must be a mapping with 'apps', got {type(data).__name__}")
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(source, exc)) from None


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(data, str(path))


@dataclass(frozen=True)
class ResolvedVersion:
    app: str  # owning app
    deployment: str  # deployment name
    name: str  # version name
    import_path: str  # code to run
    init_args: tuple  # positional init arguments
    init_kwargs: dict  # keyword init arguments
    num_replicas: int  # target replica count
    resources: Resources  # per-replica resources
    runtime_env: RuntimeEnv  # per-replica runtime environment
    weight: float  # traffic weight
    mirror_percent: float  # mirrored share
    max_ongoing_requests: int  # per replica
    max_replicas: int = DEFAULT_MAX_REPLICAS  # cap on this version's replica count (spec and runtime scale)
    autoscaling: AutoscalingConfig | None = None  # the version's block, else the deployment's; None: fixed count

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.app, self.deployment, self.name)

    @property
    def fingerprint(self) -> str:
        """Changes exactly when replicas must be replaced (code, arguments, resources, environment); never with
        the replica count or the autoscaling knobs."""
        doc = {"import_path": self.import_path, "init_args": list(self.init_args), "init_kwargs": self.init_kwargs,
               "resources": self.resources.model_dump(mode="json"),
               "runtime_env": self.runtime_env.model_dump(mode="json"),
               "max_ongoing_requests": self.max_ongoing_requests}
        return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def resolve_versions(spec: Spec) -> dict[tuple[str, str, str], ResolvedVersion]:
    """Every version of every deployment with its deployment-level defaults filled in."""
    out = {}
    for app in spec.apps:
        for dep in app.deployments:
            for version in dep.versions:
                autoscaling = version.autoscaling or dep.autoscaling
                count = version.num_replicas if version.num_replicas is not None else dep.num_replicas
                resolved = ResolvedVersion(
                    app=app.name, deployment=dep.name, name=version.name,
                    import_path=version.import_path or dep.import_path,
                    init_args=tuple(version.init_args if version.init_args is not None else dep.init_args),
                    init_kwargs=dict(version.init_kwargs if version.init_kwargs is not None else dep.init_kwargs),
                    num_replicas=autoscaling.start_replicas if autoscaling else count,
                    resources=version.resources or dep.resources,
                    runtime_env=version.runtime_env or dep.runtime_env,
                    weight=version.weight, mirror_percent=version.mirror_percent,
                    max_ongoing_requests=dep.max_ongoing_requests, max_replicas=dep.max_replicas,
                    autoscaling=autoscaling,
                )
                out[resolved.key] = resolved
    return out
