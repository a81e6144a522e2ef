"""Which function ``thingpress invoke`` runs: its handler, code and layers, environment and limits.

`resolve_function` reads a function of the SAM template and finds its code in the ``sam build`` output
(or, without one, in the source tree).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thingpress.cfn import Resolver, TemplateError, function_properties, load_template
from thingpress.console import CliError


@dataclass(frozen=True)
class FunctionSpec:
    """Where and how to run one function.

    ``handler`` is ``module.function``; ``code_dir`` and ``layer_dirs`` go on ``PYTHONPATH`` in that
    order; ``from_build`` says whether they come from the ``sam build`` output; ``environment`` is
    the template's (unresolved) Environment.Variables; ``timeout`` and ``memory`` are the function's.
    """

    logical_id: str
    handler: str
    code_dir: Path
    layer_dirs: tuple[Path, ...]
    from_build: bool
    source_dirs: tuple[Path, ...] = ()
    environment: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 3.0
    memory: int = 128


def _layer_ids(template: Mapping[str, Any], layers: Any) -> list[str]:
    ids: list[str] = []
    for layer in layers or []:
        if isinstance(layer, dict) and set(layer) == {"Ref"} and isinstance(layer["Ref"], str):
            ids.append(layer["Ref"])
        else:
            raise TemplateError(
                f"Layer {layer!r} is not a !Ref to a layer in the template; it cannot run locally."
            )
    resources = template.get("Resources") or {}
    for layer_id in ids:
        if (resources.get(layer_id) or {}).get("Type") != "AWS::Serverless::LayerVersion":
            raise TemplateError(f"Layer {layer_id} is not an AWS::Serverless::LayerVersion in the template.")
    return ids


def resolve_function(template_path: Path, logical_id: str, build_dir: Path) -> FunctionSpec:
    """Read ``logical_id`` from the template and locate its code and layers.

    The build output is used when ``<build_dir>/<logical_id>`` exists, the source tree (CodeUri,
    ContentUri relative to the template) otherwise.

    Args:
        template_path: The template.
        logical_id: The function's logical id.
        build_dir: The ``sam build`` directory.

    Returns:
        The function spec.

    Raises:
        CliError: The template does not define the function or its code cannot be found.

    """
    try:
        template = load_template(template_path)
        properties = function_properties(template, logical_id)
        layer_ids = _layer_ids(template, properties.get("Layers"))
    except TemplateError as error:
        raise CliError(str(error)) from error
    handler = properties.get("Handler")
    code_uri = properties.get("CodeUri")
    if not isinstance(handler, str) or "." not in handler or not isinstance(code_uri, str):
        raise CliError(f"Function {logical_id} needs a string Handler (module.function) and a local CodeUri.")
    base = template_path.resolve().parent
    build = build_dir if build_dir.is_absolute() else base / build_dir
    built_code = build / logical_id
    from_build = built_code.is_dir()
    resources = template.get("Resources") or {}
    source_dirs = (
        base / code_uri,
        *(base / str(resources[layer_id]["Properties"]["ContentUri"]) for layer_id in layer_ids),
    )
    if from_build:
        code_dir = built_code
        layer_dirs = tuple(build / layer_id / "python" for layer_id in layer_ids)
    else:
        code_dir, layer_dirs = source_dirs[0], source_dirs[1:]
    for directory in (code_dir, *layer_dirs):
        if not directory.is_dir():
            raise CliError(f"Code directory {directory} of {logical_id} does not exist.")
    environment = (properties.get("Environment") or {}).get("Variables") or {}
    try:
        resolver = Resolver(template)
        timeout = float(resolver.resolve(properties.get("Timeout", 3), where=f"{logical_id}.Timeout"))
        memory = int(resolver.resolve(properties.get("MemorySize", 128), where=f"{logical_id}.MemorySize"))
    except (TemplateError, TypeError, ValueError) as error:
        raise CliError(f"Timeout or MemorySize of {logical_id} cannot be read: {error}") from error
    return FunctionSpec(
        logical_id=logical_id,
        handler=handler,
        code_dir=code_dir,
        layer_dirs=layer_dirs,
        from_build=from_build,
        source_dirs=source_dirs,
        environment=dict(environment),
        timeout=timeout,
        memory=memory,
    )
