"""Step functions, registered by a stable name.

A workflow names the function each step calls; the name, not the module path, is what a
definition stores, so moving code never orphans a workflow.  Parameters and the return
annotation give the types that validation checks between a step's output and the inputs
that consume it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

from orchestrator.errors import DefinitionError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Param:
    """One parameter of a step function."""

    name: str
    annotation: Any
    required: bool


@dataclass(frozen=True)
class StepFunction:
    """A registered step function with its typed signature."""

    name: str
    fn: Callable[..., Any]
    params: dict[str, Param]
    output: Any
    accepts_any_kwargs: bool = False

    def __call__(self, **kwargs: Any) -> Any:
        return self.fn(**kwargs)


@dataclass
class Registry:
    """Step functions by name.  ``default_registry`` is the process-wide one."""

    functions: dict[str, StepFunction] = field(default_factory=dict)

    def register(self, name: str, fn: Callable[..., Any]) -> StepFunction:
        """Register ``fn`` under ``name`` and return its :class:`StepFunction`.

        Raises:
            DefinitionError: another function already holds ``name``.
        """
        existing = self.functions.get(name)
        if existing is not None and existing.fn is not fn:
            raise DefinitionError(
                f"step function name {name!r} is already registered by "
                f"{existing.fn.__module__}.{existing.fn.__qualname__}; pick another name"
            )
        sf = describe(name, fn)
        self.functions[name] = sf
        return sf

    def get(self, name: str) -> StepFunction | None:
        """Return the function registered as ``name``, or ``None``."""
        return self.functions.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.functions


default_registry = Registry()


def describe(name: str, fn: Callable[..., Any]) -> StepFunction:
    """Read ``fn``'s parameters and return type (missing annotations mean ``Any``)."""
    sig = inspect.signature(fn)
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to no type checks
        hints = {}
    params: dict[str, Param] = {}
    any_kwargs = False
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            any_kwargs = True
            continue
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            continue
        params[p.name] = Param(p.name, hints.get(p.name, Any), p.default is inspect.Parameter.empty)
    return StepFunction(name, fn, params, hints.get("return", Any), any_kwargs)


def step_function(name: str, registry: Registry | None = None) -> Callable[[F], F]:
    """Decorator: register a function as a step function under a stable ``name``.

    Example::

        @step_function("order.check_inventory")
        def check_inventory(sku: str, qty: int) -> InventoryCheck: ...
    """

    def deco(fn: F) -> F:
        sf = (registry or default_registry).register(name, fn)
        fn.step_function = sf  # type: ignore[attr-defined]
        return fn

    return deco


def function_name(fn: Any) -> str:
    """Return the registered name of a decorated function, a :class:`StepFunction`, or a str.

    Raises:
        DefinitionError: ``fn`` was never registered with :func:`step_function`.
    """
    if isinstance(fn, str):
        return fn
    if isinstance(fn, StepFunction):
        return fn.name
    sf = getattr(fn, "step_function", None)
    if isinstance(sf, StepFunction):
        return sf.name
    raise DefinitionError(
        f"{fn!r} is not a registered step function; decorate it with "
        "@step_function('<name>') from orchestrator.core.registry"
    )
