"""CloudFormation/SAM template loading and a small intrinsic-function resolver.

Used by the local stack (`thingpress.local`) to derive emulated resources from `template.yaml`.
Only what a local emulation needs is implemented; anything else raises `TemplateError` naming the
intrinsic and where it was met, rather than guessing.

Size: over 450 lines because the resolver implements every supported intrinsic, and they share one evaluator.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the pinned dependencies

__all__ = [
    "NO_VALUE",
    "Resolver",
    "TemplateError",
    "function_properties",
    "load_template",
    "merge_globals",
]

PSEUDO_PARTITION: Final = "aws"
PSEUDO_URL_SUFFIX: Final = "amazonaws.com"

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

_SUB_PATTERN: Final = re.compile(r"\$\{([^}]*)\}")


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


class Resolver:
    """Evaluates CloudFormation intrinsic functions and conditions against local values.

    `physical_ids` maps a resource's logical id to its attributes: the key ``"Ref"`` is what
    ``Ref`` returns, other keys (``Arn``, ``QueueName``, ``QueueUrl``...) are ``Fn::GetAtt``
    attributes. The mapping is read at evaluation time, so a caller may fill it while creating
    resources in dependency order.
    """

    def __init__(
        self,
        template: Mapping[str, Any],
        parameters: Mapping[str, str] | None = None,
        *,
        region: str = "us-east-1",
        account: str = "123456789012",
        stack_name: str = "thingpress",
        stack_id: str | None = None,
        physical_ids: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Bind the template, parameter overrides, pseudo-parameter values and physical ids.

        `stack_id` is the value of AWS::StackId (default: an ARN with a zero UUID).

        Raises `TemplateError` when an override names an unknown parameter, a parameter without a
        default is not given, or a value is not among its AllowedValues.
        """
        self.template = template
        self.region = region
        self.account = account
        self.stack_name = stack_name
        self.stack_id = stack_id or (
            f"arn:{PSEUDO_PARTITION}:cloudformation:{region}:{account}:stack/{stack_name}/"
            "00000000-0000-0000-0000-000000000000"
        )
        self.physical_ids: dict[str, dict[str, Any]] = physical_ids if physical_ids is not None else {}
        self.parameters = self._bind_parameters(parameters or {})
        self._conditions: dict[str, bool] = {}

    def _bind_parameters(self, overrides: Mapping[str, str]) -> dict[str, Any]:
        declared: Mapping[str, Any] = self.template.get("Parameters") or {}
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

    @property
    def pseudo_parameters(self) -> dict[str, Any]:
        """The pseudo parameters (AWS::Region, AWS::AccountId...) and their local values."""
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": self.stack_id,
            "AWS::Partition": PSEUDO_PARTITION,
            "AWS::URLSuffix": PSEUDO_URL_SUFFIX,
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }

    def condition(self, name: str) -> bool:
        """Evaluate the named template condition.

        Args:
            name: The condition's name.

        Returns:
            Its value.

        Raises:
            TemplateError: An unknown condition, or one that is not boolean.

        """
        if name not in self._conditions:
            conditions: Mapping[str, Any] = self.template.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"Condition {name} is not declared in the template.")
            value = self.resolve(conditions[name], where=f"Conditions.{name}")
            if not isinstance(value, bool):
                raise TemplateError(f"Condition {name} does not evaluate to true or false.")
            self._conditions[name] = value
        return self._conditions[name]

    def resource_enabled(self, logical_id: str) -> bool:
        """Return whether a resource exists in this deployment (its Condition, if any, is true).

        Args:
            logical_id: The resource.

        Returns:
            Whether it exists.

        Raises:
            TemplateError: An unknown resource or condition.

        """
        resources: Mapping[str, Any] = self.template.get("Resources") or {}
        if logical_id not in resources:
            raise TemplateError(f"Resource {logical_id} is not declared in the template.")
        name = resources[logical_id].get("Condition")
        return True if name is None else self.condition(str(name))

    def resolve(self, value: Any, *, where: str = "template") -> Any:
        """Evaluate every intrinsic function in `value` and return the plain result.

        ``AWS::NoValue`` removes the enclosing mapping key or list item. Unsupported intrinsics, unknown
        references and malformed arguments raise `TemplateError`.

        Args:
            value: A template value.
            where: The location, for error messages.

        Returns:
            The resolved value.

        """
        if isinstance(value, list):
            items = [self.resolve(item, where=f"{where}[{index}]") for index, item in enumerate(value)]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self._ref(argument, where)
            if key == "Condition" and isinstance(argument, str):
                return self.condition(argument)
            if key.startswith("Fn::"):
                return self._function(key, argument, where)
        resolved = {key: self.resolve(item, where=f"{where}.{key}") for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _ref(self, name: Any, where: str) -> Any:
        if not isinstance(name, str):
            raise TemplateError(f"Ref at {where} must name a parameter or resource.")
        if name in self.parameters:
            return self.parameters[name]
        pseudo = self.pseudo_parameters
        if name in pseudo:
            return pseudo[name]
        return self._attribute(name, "Ref", where)

    def _attribute(self, logical_id: str, attribute: str, where: str) -> Any:
        resources: Mapping[str, Any] = self.template.get("Resources") or {}
        if logical_id not in resources:
            raise TemplateError(
                f"{where} refers to {logical_id}, which is neither a parameter nor a resource."
            )
        attributes = self.physical_ids.get(logical_id)
        if attributes is None:
            raise TemplateError(
                f"{where} refers to resource {logical_id}, which has not been created locally."
            )
        if attribute not in attributes:
            label = "Ref" if attribute == "Ref" else f"attribute {attribute}"
            raise TemplateError(
                f"{where} asks for {label} of {logical_id}, which the local stack does not provide."
            )
        return attributes[attribute]

    def _function(self, key: str, argument: Any, where: str) -> Any:
        here = f"{where}.{key}"
        handlers = {
            "Fn::Sub": self._sub,
            "Fn::GetAtt": self._getatt,
            "Fn::Join": self._join,
            "Fn::If": self._if,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::Equals": self._equals,
            "Fn::Not": self._not,
            "Fn::And": self._and,
            "Fn::Or": self._or,
            "Fn::FindInMap": self._find_in_map,
            "Fn::Base64": self._base64,
        }
        handler = handlers.get(key)
        if handler is None:
            raise TemplateError(f"{key} at {where} is not supported by the local resolver.")
        return handler(argument, here)

    def _sub(self, argument: Any, where: str) -> str:
        if isinstance(argument, str):
            text, variables = argument, {}
        elif isinstance(argument, list) and len(argument) == 2 and isinstance(argument[0], str):
            text = argument[0]
            variables = self.resolve(argument[1], where=where)
            if not isinstance(variables, dict):
                raise TemplateError(f"Fn::Sub at {where} needs a mapping of variables.")
        else:
            raise TemplateError(f"Fn::Sub at {where} takes a string or [string, variables].")

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                value = variables[name]
            elif "." in name and not name.startswith("AWS::"):
                resource, _, attribute = name.partition(".")
                value = self._attribute(resource, attribute, where)
            else:
                value = self._ref(name, where)
            if isinstance(value, list | dict) or value is NO_VALUE:
                raise TemplateError(f"Fn::Sub at {where}: ${{{name}}} is not a string.")
            return str(value)

        return _SUB_PATTERN.sub(replace, text)

    def _getatt(self, argument: Any, where: str) -> Any:
        argument = self.resolve(argument, where=where)
        if isinstance(argument, str):
            argument = argument.split(".", 1)
        if not (
            isinstance(argument, list) and len(argument) == 2 and all(isinstance(a, str) for a in argument)
        ):
            raise TemplateError(f"Fn::GetAtt at {where} takes [resource, attribute].")
        return self._attribute(argument[0], argument[1], where)

    def _join(self, argument: Any, where: str) -> str:
        argument = self.resolve(argument, where=where)
        if not (isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], list)):
            raise TemplateError(f"Fn::Join at {where} takes [delimiter, list].")
        delimiter, items = argument
        return str(delimiter).join(str(item) for item in items)

    def _if(self, argument: Any, where: str) -> Any:
        if not (isinstance(argument, list) and len(argument) == 3 and isinstance(argument[0], str)):
            raise TemplateError(f"Fn::If at {where} takes [condition, value if true, value if false].")
        chosen = argument[1] if self.condition(argument[0]) else argument[2]
        return self.resolve(chosen, where=where)

    def _select(self, argument: Any, where: str) -> Any:
        argument = self.resolve(argument, where=where)
        if not (isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], list)):
            raise TemplateError(f"Fn::Select at {where} takes [index, list].")
        try:
            return argument[1][int(argument[0])]
        except (ValueError, IndexError) as error:
            raise TemplateError(
                f"Fn::Select at {where}: index {argument[0]!r} is not in the list."
            ) from error

    def _split(self, argument: Any, where: str) -> list[str]:
        argument = self.resolve(argument, where=where)
        if not (
            isinstance(argument, list) and len(argument) == 2 and all(isinstance(a, str) for a in argument)
        ):
            raise TemplateError(f"Fn::Split at {where} takes [delimiter, string].")
        return str(argument[1]).split(argument[0])

    def _boolean(self, argument: Any, where: str) -> bool:
        value = self.resolve(argument, where=where)
        if not isinstance(value, bool):
            raise TemplateError(f"{where} needs a condition, got {value!r}.")
        return value

    def _equals(self, argument: Any, where: str) -> bool:
        argument = self.resolve(argument, where=where)
        if not (isinstance(argument, list) and len(argument) == 2):
            raise TemplateError(f"Fn::Equals at {where} takes two values.")
        first, second = argument
        if isinstance(first, list | dict) or isinstance(second, list | dict):
            return bool(first == second)
        return str(first) == str(second)

    def _not(self, argument: Any, where: str) -> bool:
        if not (isinstance(argument, list) and len(argument) == 1):
            raise TemplateError(f"Fn::Not at {where} takes one condition.")
        return not self._boolean(argument[0], where)

    def _and(self, argument: Any, where: str) -> bool:
        if not isinstance(argument, list) or not argument:
            raise TemplateError(f"Fn::And at {where} takes a list of conditions.")
        return all(self._boolean(item, where) for item in argument)

    def _or(self, argument: Any, where: str) -> bool:
        if not isinstance(argument, list) or not argument:
            raise TemplateError(f"Fn::Or at {where} takes a list of conditions.")
        return any(self._boolean(item, where) for item in argument)

    def _find_in_map(self, argument: Any, where: str) -> Any:
        argument = self.resolve(argument, where=where)
        if not (isinstance(argument, list) and len(argument) == 3):
            raise TemplateError(f"Fn::FindInMap at {where} takes [map, top-level key, second-level key].")
        mappings: Mapping[str, Any] = self.template.get("Mappings") or {}
        try:
            return mappings[argument[0]][argument[1]][argument[2]]
        except (KeyError, TypeError) as error:
            raise TemplateError(f"Fn::FindInMap at {where}: {argument} is not in Mappings.") from error

    def _base64(self, argument: Any, where: str) -> str:
        value = self.resolve(argument, where=where)
        if not isinstance(value, str):
            raise TemplateError(f"Fn::Base64 at {where} takes a string.")
        return base64.b64encode(value.encode("utf-8")).decode("ascii")
