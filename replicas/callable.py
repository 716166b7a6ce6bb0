"""Loading the user's code: `module:Class` (constructed with init args) or `module:function`."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["UserCallable", "load_callable", "ImportPathError"]


class ImportPathError(ValueError):
    """The import path does not name an importable class or function."""


@dataclass(frozen=True)
class UserCallable:
    target: Callable[[Any], Any]  # what each request calls with its parsed JSON body
    is_async: bool  # True: awaited on the replica's event loop; False: run on worker threads
    instance: Any  # the constructed object for a class, None for a function
    health_check: Callable[[], Any] | None  # the user's own `check_health`, if it defines one
    wants_path: bool = False  # the class sets `wants_request_path = True`: called as target(payload, path=...)
    close: Callable[[], Any] | None = None  # the user's own `close`, called once the replica has drained


def _resolve(import_path: str) -> Any:
    module_name, sep, attr_path = import_path.partition(":")
    if not sep or not module_name or not attr_path:
        raise ImportPathError(f"import_path {import_path!r} must look like 'package.module:Name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportPathError(f"import_path {import_path!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ImportPathError(f"import_path {import_path!r}: {module_name!r} has no attribute {part!r}") from exc
    return obj


def load_callable(import_path: str, init_args: tuple = (), init_kwargs: dict | None = None) -> UserCallable:
    """Import and, for a class, construct the user's callable."""
    obj = _resolve(import_path)
    init_kwargs = dict(init_kwargs or {})
    if inspect.isclass(obj):
        instance = obj(*init_args, **init_kwargs)
        if not callable(instance):
            raise ImportPathError(f"import_path {import_path!r}: class {obj.__name__} defines no __call__")
        target = instance.__call__
        health = getattr(instance, "check_health", None)
        close = getattr(instance, "close", None)
        return UserCallable(target=target, is_async=inspect.iscoroutinefunction(target), instance=instance,
                            health_check=health if callable(health) else None,
                            wants_path=bool(getattr(instance, "wants_request_path", False)),
                            close=close if callable(close) else None)
    if callable(obj):
        if init_args or init_kwargs:
            raise ImportPathError(f"import_path {import_path!r} is a function; it takes no init_args/init_kwargs")
        return UserCallable(target=obj, is_async=inspect.iscoroutinefunction(obj), instance=None, health_check=None)
    raise ImportPathError(f"import_path {import_path!r} names a {type(obj).__name__}, not a class or function")
