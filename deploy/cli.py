"""The `raygate` command: up, deploy, status, split, scale, down, plan.

`up` runs the platform in the foreground. The other commands talk to a running platform through the
gateway's admin API (bearer token), found from `--url`/`--token`, RAYGATE_URL/RAYGATE_ADMIN_TOKEN, or the
run directory that `up` wrote.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import click
import orjson

from deploy.keeper import keeper_command
from deploy.rundir import default_run_dir, read_run_info
from deploy.spec import SpecError, load_spec

__all__ = ["main"]


class AdminClient:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0) -> dict:
        import urllib.error
        import urllib.request

        data = orjson.dumps(body) if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                error = orjson.loads(exc.read())["error"]
                message = f"{error['code']}: {error['message']}"
            except Exception:
                message = str(exc)
            raise click.ClickException(message) from None
        except urllib.error.URLError as exc:
            raise click.ClickException(f"cannot reach raygate at {self.url}: {exc.reason} "
                                       f"(is `raygate up` running?)") from None


def _client(ctx: click.Context) -> AdminClient:
    params = ctx.find_root().params
    run_dir = Path(params["run_dir"])
    info = read_run_info(run_dir) or {}
    url = params.get("url") or os.environ.get("RAYGATE_URL") or info.get("url") or "http://127.0.0.1:8000"
    token = params.get("token") or os.environ.get("RAYGATE_ADMIN_TOKEN")
    if not token and info.get("token_file"):
        try:
            token = Path(info["token_file"]).read_text().strip()
        except OSError:
            token = None
    if not token:
        raise click.ClickException(f"no admin token: pass --token, set RAYGATE_ADMIN_TOKEN, or run where "
                                   f"`raygate up` wrote {run_dir / 'up.json'}")
    return AdminClient(url, token)


@click.group()
@click.option("--run-dir", type=click.Path(file_okay=False),
              default=lambda: str(default_run_dir(os.environ.get("RAYGATE_RUN_DIR"))),
              show_default="$RAYGATE_RUN_DIR or ~/.raygate", help="Where `up` keeps its state.")
@click.option("--url", default=None, help="Gateway URL (admin API).")
@click.option("--token", default=None, help="Admin bearer token.")
def cli(run_dir: str, url: str | None, token: str | None) -> None:
    """raygate: serve Python models and business code on Ray."""


@cli.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--host", default=None, help="Gateway bind address (default 127.0.0.1; binding wider is explicit).")
@click.option("--port", type=int, default=None, help="Gateway port (default from the spec, 8000).")
@click.option("--gateways", "num_gateways", default=None,
              help="Gateway processes sharing the port: a number or 'auto' (one per core, 2 to 8).")
@click.option("--num-cpus", type=float, default=None, help="CPUs of the local Ray (default: the machine's).")
@click.pass_context
def up(ctx, spec, host, port, num_gateways, num_cpus) -> None:
    """Start Redis and Ray when REDIS_URL/RAY_ADDRESS are unset, deploy SPEC (default: the quickstart), serve."""
    from deploy.up import UpOptions, run_up

    if num_gateways is not None and num_gateways != "auto":
        try:
            num_gateways = int(num_gateways)
        except ValueError:
            raise click.ClickException(f"--gateways must be a number or 'auto', got {num_gateways!r}") from None
    options = UpOptions(spec_path=spec, run_dir=Path(ctx.find_root().params["run_dir"]),
                        redis_url=os.environ.get("REDIS_URL") or None,
                        ray_address=os.environ.get("RAY_ADDRESS") or None,
                        admin_token=os.environ.get("RAYGATE_ADMIN_TOKEN") or None,
                        host=host, port=port, num_gateways=num_gateways, num_cpus=num_cpus)
    try:
        code = run_up(options)
    except (SpecError, ValueError) as exc:  # ValueError: a command-line override the spec's rules refuse
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--no-wait", is_flag=True, help="Return once the controller accepted the spec.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds to wait for replicas.")
@click.pass_context
def deploy(ctx, spec, no_wait, timeout) -> None:
    """Apply SPEC to the running platform and wait until its replicas are healthy."""
    try:
        parsed = load_spec(spec)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    client = _client(ctx)
    accepted = client.request("POST", "/-/admin/deploy?wait=0&source=" + spec, parsed.to_dict())
    generation = accepted["generation"]
    click.echo(f"spec accepted (generation {generation})")
    if no_wait:
        return
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        status = client.request("GET", "/-/admin/status")
        apply = status["apply"]
        progress = _progress(status)
        if progress != last:
            click.echo(progress)
            last = progress
        if apply.get("generation") == generation and apply.get("state") == "failed":
            raise click.ClickException(f"deploy failed, running apps unchanged: {apply.get('error')}")
        if apply.get("generation") == generation and apply.get("state") == "applied" and _all_running(status):
            click.echo("deployed: all replicas running")
            return
        time.sleep(0.5)
    raise click.ClickException(f"replicas not all running after {timeout:g}s")


def _progress(status: dict) -> str:
    parts = []
    for app in status["apps"]:
        for dep in app["deployments"]:
            for version in dep["versions"]:
                parts.append(f"{app['name']}/{dep['name']}/{version['name']} {version['running']}/{version['target']}")
    return "replicas running: " + (", ".join(parts) or "none")


def _all_running(status: dict) -> bool:
    return all(v["running"] >= v["target"] and not v.get("rolling")
               for a in status["apps"] for d in a["deployments"] for v in d["versions"])


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx, as_json: bool) -> None:
    """Apps, versions, weights, traffic and every replica (actor id, node, pid, version, state)."""
    data = _client(ctx).request("GET", "/-/admin/status")
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    traffic = {(t["app"], t["deployment"], t["version"]): t["requests"] for t in data["traffic"]}
    apply = data["apply"]
    gateways = data.get("gateways") or []
    click.echo(f"generation {data['generation']} ({apply.get('state')}), routing table {data['table_version']}, "
               f"{len(gateways)} gateway process(es)")
    if apply.get("error"):
        click.echo(f"last apply error: {apply['error']}")
    rejected = (data.get("saved_state") or {}).get("rejected")
    if rejected:
        click.echo(f"saved state refused (kept at {rejected['kept_at']}): {rejected['error']}")
    _echo_rows([("GATEWAY", "NODE", "PID", "STATE", "SERVED", "IN FLIGHT", "TABLE")] + [  # spares: index -1
        (str(g.get("index")), str(g.get("node_ip", "")), str(g.get("pid")), str(g.get("state")), str(g.get("served")),
         str(g.get("in_flight")), str(g.get("table_version"))) for g in gateways])
    rows = [("APP", "ROUTE", "DEPLOYMENT", "VERSION", "WEIGHT", "REQUESTS", "REPLICA", "STATE", "PID", "NODE")]
    # REQUESTS: answered by all gateways since they started
    for app in data["apps"]:
        for dep in app["deployments"]:
            for version in dep["versions"]:
                served = traffic.get((app["name"], dep["name"], version["name"]), 0)
                head = (app["name"], app["route_prefix"], dep["name"], version["name"], f"{version['weight']:g}",
                        str(served))
                if not version["replicas"]:
                    rows.append(head + ("-", f"0/{version['target']}", "-", "-"))
                for replica in version["replicas"]:
                    rows.append(head + (replica["replica_id"], replica["state"], str(replica["pid"]),
                                        replica["node_id"][:12]))
    _echo_rows(rows)
    _echo_features(data)


def _figure(value, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def _echo_features(data: dict) -> None:
    """Per scenario: each constraint's use against capacity and plan, prices, forecast, certificate; per
    pipeline: lag, pending, dead letters and rates."""
    for scenario in data.get("scenarios") or []:
        if "error" in scenario:
            click.echo(f"scenario {scenario['scenario']}: {scenario['error']}")
            continue
        forecast = scenario.get("forecast") or {}
        certificate = scenario.get("certificate") or {}
        click.echo(f"scenario {scenario['scenario']} ({scenario['route_prefix']}): prices v"
                   f"{_figure(scenario.get('prices_version'), 'd') if scenario.get('prices_version') else '-'}, "
                   f"age {_figure(scenario.get('prices_age_s'), '.1f')} s{' STALE' if scenario.get('stale') else ''}"
                   f", forecast {forecast.get('model') or '-'} ({_figure(forecast.get('remaining_requests'))} "
                   f"requests left), gap {_figure(certificate.get('rigorous_gap', certificate.get('gap')))}")
        _echo_rows([("CONSTRAINT", "CAPACITY", "USED", "USE", "PLANNED", "PRICE")] + [
            (c["name"], _figure(c["capacity"]), _figure(c["used"]), _figure(c["use"], ".1%"),
             _figure(c.get("planned_use"), ".1%") if c.get("planned_use") is not None else "-",
             _figure(c.get("price"))) for c in scenario["constraints"]])
    for pipeline in data.get("pipelines") or []:
        if "error" in pipeline:
            click.echo(f"pipeline {pipeline['pipeline']}: {pipeline['error']}")
            continue
        rates = pipeline.get("rates") or {}
        click.echo(f"pipeline {pipeline['pipeline']}: lag {pipeline.get('lag')}, pending {pipeline.get('pending')}, "
                   f"dead letters {pipeline.get('dead_letters')}, "
                   + ", ".join(f"{k} {_figure(v)}" for k, v in rates.items()))


def _echo_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@cli.command()
@click.argument("app")
@click.argument("deployment")
@click.argument("weights", nargs=-1, required=True)
@click.pass_context
def split(ctx, app, deployment, weights) -> None:
    """Set version weights at runtime: raygate split APP DEPLOYMENT v1=90 v2=10."""
    parsed = {}
    for item in weights:
        name, sep, value = item.partition("=")
        try:
            parsed[name] = float(value)
        except ValueError:
            raise click.ClickException(f"weight {item!r} must look like VERSION=NUMBER") from None
        if not sep or not name:
            raise click.ClickException(f"weight {item!r} must look like VERSION=NUMBER")
    result = _client(ctx).request("POST", "/-/admin/split", {"app": app, "deployment": deployment, "weights": parsed})
    click.echo(f"weights of {app}/{deployment}: " + ", ".join(f"{k}={v:g}" for k, v in result["weights"].items()))


@cli.command()
@click.argument("app")
@click.argument("deployment")
@click.argument("version")
@click.argument("num_replicas", type=int)
@click.pass_context
def scale(ctx, app, deployment, version, num_replicas) -> None:
    """Set the replica count of one version."""
    result = _client(ctx).request("POST", "/-/admin/scale", {"app": app, "deployment": deployment,
                                                              "version": version, "num_replicas": num_replicas})
    click.echo(f"{app}/{deployment}/{version}: target {result['target']} replicas")


@cli.command()
@click.option("--timeout", type=float, default=60.0, show_default=True)
@click.pass_context
def down(ctx, timeout: float) -> None:
    """Stop the platform that `raygate up` started (or shut down the apps of a joined cluster)."""
    run_dir = Path(ctx.find_root().params["run_dir"])
    info = read_run_info(run_dir)
    if info and info.get("pid"):
        pid = info["pid"]
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            click.echo("raygate was not running")
            (run_dir / "up.json").unlink(missing_ok=True)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                click.echo("stopped")
                return
            time.sleep(0.2)
        raise click.ClickException(f"raygate (pid {pid}) still running after {timeout:g}s")
    _client(ctx).request("POST", "/-/admin/shutdown")
    click.echo("shutdown requested")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
             add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def plan(args) -> None:
    """The nearline planner (same as `python -m planner ...`): generate, solve, evaluate."""
    from planner.commands import main as planner_main

    sys.exit(planner_main(list(args)))


cli.add_command(keeper_command)  # `raygate keeper KEEPER.yaml` (deploy/keeper.py)


def main() -> None:
    if not os.environ.get("RAY_ADDRESS"):
        # Read by Ray when it is first imported (and by every Ray process it starts): with a local Ray,
        # every Ray socket binds loopback.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    cli(prog_name="raygate")


if __name__ == "__main__":
    main()
