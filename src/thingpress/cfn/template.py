"""Template loading: short-form tags, SAM Globals and parameter binding.

The intrinsic-function resolver that evaluates what this module loads is `thingpress.cfn.resolver`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the pinned dependencies

__all__ = [
    "NO_VALUE",
    "TemplateError",
    "bind_parameters",
    "function_properties",
    "load_template",
    "merge_globals",
]

# Short-form tags whose long form is "Fn::<Name>"; !Ref and !Condition have their own long form.
_FN_TAGS: Final = (
    "And",
    "Base64",
    "Cidr",
    "Equals",
    "FindInMap",
    "GetAZs",
    "If",
    "ImportValue",
    "Join",
    "Length",
    "Not",
    "Or",
    "Select",
    "Split",
    "Sub",
    "ToJsonString",
    "Transform",
)


class TemplateError(Exception):
    """A template cannot be loaded or evaluated; the message says which entry and why."""


class _NoValue:
    """The value of ``AWS::NoValue``: the enclosing property or list item is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Final = _NoValue()


class _TemplateLoader(yaml.SafeLoader):  # type: ignore[misc]
    """A SafeLoader that keeps CloudFormation's short-form tags and does not turn dates into dates."""


# CloudFormation reads "2010-09-09" as a string; YAML's timestamp resolver would make it a date.
_TemplateLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_node(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    raise TemplateError(f"Unsupported YAML node {node!r}.")  # pragma: no cover - yaml has no other kinds


def _make_fn_constructor(name: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        return {f"Fn::{name}": _construct_node(loader, node)}

    return construct


def _construct_ref(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    return {"Ref": _construct_node(loader, node)}


def _construct_condition(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    return {"Condition": _construct_node(loader, node)}


def _construct_getatt(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    value = _construct_node(loader, node)
    if isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {"Fn::GetAtt": value}


def _construct_unknown(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    raise TemplateError(f"Unknown YAML tag !{suffix} at line {node.start_mark.line + 1}.")


for _name in _FN_TAGS:
    _TemplateLoader.add_constructor(f"!{_name}", _make_fn_constructor(_name))
_TemplateLoader.add_constructor("!Ref", _construct_ref)
_TemplateLoader.add_constructor("!Condition", _construct_condition)
_TemplateLoader.add_constructor("!GetAtt", _construct_getatt)
_TemplateLoader.add_multi_constructor("!", _construct_unknown)


def load_template(path: str | Path) -> dict[str, Any]:
    """Load a CloudFormation/SAM template (YAML or JSON) with short-form tags in their long forms.

    ``!Ref X`` becomes ``{"Ref": "X"}``, ``!Sub s`` becomes ``{"Fn::Sub": s}``, ``!GetAtt A.B``
    becomes ``{"Fn::GetAtt": ["A", "B"]}``. An unreadable file raises ``OSError``.

    Args:
        path: The template file.

    Returns:
        The template as a dict.

    Raises:
        TemplateError: The file is not a mapping or uses an unknown tag.

    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        document = yaml.load(text, Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader subclass  # nosec B506
    except yaml.YAMLError as error:
        raise TemplateError(f"Template {path} is not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise TemplateError(f"Template {path} is not a mapping.")
    return document


def _merge_global(global_value: Any, resource_value: Any) -> Any:
    # SAM's rules: maps merge (the resource wins), lists concatenate (globals first), scalars override.
    if isinstance(global_value, dict) and isinstance(resource_value, dict):
        merged = dict(global_value)
        for key, value in resource_value.items():
            merged[key] = _merge_global(global_value[key], value) if key in global_value else value
        return merged
    if isinstance(global_value, list) and isinstance(resource_value, list):
        return [*global_value, *resource_value]
    return resource_value


def merge_globals(template: Mapping[str, Any], section: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    """Merge SAM ``Globals.<section>`` (for example ``Function``) into a resource's properties.

    Maps are merged with the resource winning, lists concatenated, scalars overridden, as SAM does.

    Args:
        template: The template.
        section: The Globals section name.
        properties: The resource's own properties.

    Returns:
        The merged properties.

    Raises:
        TemplateError: The Globals section is not a mapping.

    """
    globals_section = template.get("Globals") or {}
    defaults = globals_section.get(section) or {}
    merged = _merge_global(dict(defaults), dict(properties))
    if not isinstance(merged, dict):
        raise TemplateError(f"Globals.{section} cannot be merged into a resource's properties.")
    return merged


def function_properties(template: Mapping[str, Any], logical_id: str) -> dict[str, Any]:
    """Return an ``AWS::Serverless::Function``'s properties with ``Globals.Function`` merged in.

    Args:
        template: The template.
        logical_id: The function's logical id.

    Returns:
        The merged properties.

    Raises:
        TemplateError: That resource is not a serverless function.

    """
    resource = (template.get("Resources") or {}).get(logical_id)
    if not resource or resource.get("Type") != "AWS::Serverless::Function":
        raise TemplateError(f"Resource {logical_id} is not an AWS::Serverless::Function.")
    return merge_globals(template, "Function", resource.get("Properties") or {})


def bind_parameters(template: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """Bind the template's Parameters to the overrides or their defaults.

    List-typed parameters (``CommaDelimitedList``, ``List<...>``) become lists of strings.

    Args:
        template: The template.
        overrides: Parameter values given by the caller.

    Returns:
        Each declared parameter's value.

    Raises:
        TemplateError: An override names an unknown parameter, a parameter without a default is not
            given, or a value is not among its AllowedValues.

    """
    declared: Mapping[str, Any] = template.get("Parameters") or {}
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(f"Parameter override {', '.join(unknown)} is not declared in the template.")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in overrides:
            raw = str(overrides[name])
        elif "Default" in spec:
            raw = str(spec["Default"])
        else:
            raise TemplateError(f"Parameter {name} has no default and no value was given.")
        allowed = spec.get("AllowedValues")
        if allowed is not None and raw not in [str(value) for value in allowed]:
            raise TemplateError(f"Parameter {name} value {raw!r} is not one of {allowed}.")
        if str(spec.get("Type", "String")).startswith(("CommaDelimitedList", "List<")):
            values[name] = [item.strip() for item in raw.split(",")] if raw else []
        else:
            values[name] = raw
    return values
