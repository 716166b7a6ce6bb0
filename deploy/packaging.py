"""Local `working_dir` and `py_modules` of a spec, shipped the way Ray Serve ships them.

Ray takes a local directory in a runtime_env only at the job level ("Passing directories or modules to be
dynamically uploaded is only supported at the job level"); replicas are started by the controller actor, so
the directory must be uploaded first. `upload_local_dirs(spec_doc)` runs in a process connected to the
cluster (the `raygate up` driver, `raygate deploy` with RAY_ADDRESS, a test): it zips every local
`working_dir`/`py_modules` entry with Ray's own packaging (content-addressed `gcs://_ray_pkg_<hash>.zip`,
.gitignore/.rayignore and Ray's default excludes honoured, unchanged directories never uploaded twice), stores
it in the cluster's GCS and returns the spec with those entries rewritten to the URIs. URIs and remote
archives (s3://, https://...zip) pass through untouched.

Lifetime: Ray keeps an uploaded package while a live actor's runtime_env names it, and for
`RAY_RUNTIME_ENV_URI_PIN_EXPIRATION_S` (default 600 s) after the upload. A package whose replicas were all
gone longer than that, or a cluster whose GCS restarted without persistence, needs the spec applied again
from a machine that has the directory (`raygate deploy SPEC`).
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["local_entries", "upload_local_dirs"]

_URI_SCHEMES = ("gcs://", "s3://", "gs://", "https://", "http://", "file://", "azure://", "abfss://")


def _runtime_envs(spec_doc: dict) -> Iterator[dict]:
    """Every runtime_env mapping of the spec (deployment level and version overrides)."""
    for app in spec_doc.get("apps") or []:
        for dep in app.get("deployments") or []:
            if isinstance(dep.get("runtime_env"), dict):
                yield dep["runtime_env"]
            for version in dep.get("versions") or []:
                if isinstance(version.get("runtime_env"), dict):
                    yield version["runtime_env"]


def _is_local(entry: Any) -> bool:
    return isinstance(entry, (str, os.PathLike)) and not str(entry).startswith(_URI_SCHEMES)


def local_entries(spec_doc: dict) -> list[str]:
    """The local paths the spec names (what `upload_local_dirs` would upload)."""
    found = []
    for env in _runtime_envs(spec_doc):
        if env.get("working_dir") and _is_local(env["working_dir"]):
            found.append(str(env["working_dir"]))
        found += [str(m) for m in env.get("py_modules") or [] if _is_local(m)]
    return found


def upload_local_dirs(spec_doc: dict, base_dir: str | os.PathLike | None = None) -> dict:
    """The spec with every local working_dir/py_modules entry uploaded to the connected cluster's GCS and
    replaced by its gcs:// URI. Relative paths are taken from `base_dir` (default: the current directory).
    Raises ValueError naming the entry when a path does not exist. Needs `ray.init` done (the driver)."""
    if not local_entries(spec_doc):
        return spec_doc
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    base = Path(base_dir or os.getcwd())
    doc = copy.deepcopy(spec_doc)
    uploaded: dict[str, str] = {}  # local path -> URI, so a directory shared by versions is zipped once
    with tempfile.TemporaryDirectory(prefix="raygate-pkg-") as scratch:
        for env in _runtime_envs(doc):
            if env.get("working_dir") and _is_local(env["working_dir"]):
                path = _existing(base, env["working_dir"], "working_dir")
                if path not in uploaded:
                    uploaded[path] = upload_working_dir_if_needed(
                        {"working_dir": path}, include_gitignore=True, scratch_dir=scratch)["working_dir"]
                env["working_dir"] = uploaded[path]
            modules = env.get("py_modules") or []
            if any(_is_local(m) for m in modules):
                paths = [_existing(base, m, "py_modules") if _is_local(m) else m for m in modules]
                env["py_modules"] = upload_py_modules_if_needed(
                    {"py_modules": paths}, include_gitignore=True, scratch_dir=scratch)["py_modules"]
    return doc


def _existing(base: Path, entry: Any, field: str) -> str:
    path = Path(entry).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise ValueError(f"runtime_env.{field}: {entry!r} does not exist (looked at {path})")
    return str(path.resolve())
