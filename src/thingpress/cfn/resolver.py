"""A small CloudFormation intrinsic-function resolver for the local stack.

Used by the local stack (`thingpress.local`) to derive emulated resources from `template.yaml`.
Only what a local emulation needs is implemented; anything else raises `TemplateError` naming the
intrinsic and where it was met, rather than guessing.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any, Final

from thingpress.cfn.template import NO_VALUE, TemplateError, bind_parameters

__all__ = ["Resolver"]

PSEUDO_PARTITION: Final = "aws"
PSEUDO_URL_SUFFIX: Final = "amazonaws.com"

_SUB_PATTERN: Final = re.compile(r"\$\{([^}]*)\}")


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

        Args:
            template: The loaded template.
            parameters: Parameter overrides; see `bind_parameters`.
            region: The value of AWS::Region.
            account: The value of AWS::AccountId.
            stack_name: The value of AWS::StackName.
            stack_id: The value of AWS::StackId (default: an ARN with a zero UUID).
            physical_ids: Each created resource's attributes, filled by the caller as it creates them.

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
        self.parameters = bind_parameters(template, parameters or {})
        self._conditions: dict[str, bool] = {}

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
