"""Read ``template.yaml`` — the one source of truth the local stack and the tools derive from.

The local stack takes its resource names, the rule's event pattern, retry settings and DLQ
wiring from here, so local and cloud cannot drift apart.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[3]
TEMPLATE_PATH = PROJECT_ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """PyYAML loader that turns CloudFormation short tags (``!Ref``, ``!Sub``…) into their long form."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template as plain data, intrinsics in their long (JSON) form."""
    with path.open(encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a CloudFormation template")
    return data


def _is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return key in ("Ref", "Condition") or str(key).startswith("Fn::")


def _merge_globals(global_value: Any, local_value: Any) -> Any:
    """SAM's rule for a ``Globals`` key a resource also sets: maps merge key by key, lists add up
    (global items first), anything else (an intrinsic included) is the resource's own."""
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        if _is_intrinsic(global_value) or _is_intrinsic(local_value):
            return local_value
        merged = dict(global_value)
        for key, value in local_value.items():
            merged[key] = _merge_globals(global_value[key], value) if key in global_value else value
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return [*global_value, *local_value]
    return local_value


def function_properties(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """A function's properties as SAM deploys them: the template's ``Globals.Function`` merged in."""
    properties: dict[str, Any] = copy.deepcopy(template.get("Globals", {}).get("Function", {}))
    for key, value in template["Resources"][logical_id].get("Properties", {}).items():
        properties[key] = _merge_globals(properties[key], value) if key in properties else value
    return properties


def sam_transform(template: dict[str, Any], parameters: dict[str, str], region: str = "us-east-1") -> dict[str, Any]:
    """Expand the SAM transform exactly as CloudFormation would (offline, via aws-sam-translator)."""
    from samtranslator.translator.transform import transform

    class _NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    packaged = copy.deepcopy(template)
    for resource in packaged.get("Resources", {}).values():  # as `sam package` would upload them
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = f"s3://packaged/{props[key].strip('/')}.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    result: dict[str, Any] = transform(packaged, parameters, _NoManagedPolicies())
    return result


class Resolver:
    """Evaluates the intrinsics this template uses (Ref, Sub, If, Equals, Not, GetAtt) for local use."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, str], stack_name: str) -> None:
        declared = template.get("Parameters", {})
        missing = [name for name, spec in declared.items() if "Default" not in spec and name not in parameters]
        if missing:
            raise ValueError(f"template parameters without a value: {', '.join(missing)}")
        unknown = sorted(set(parameters) - set(declared))
        if unknown:
            raise ValueError(f"unknown template parameters: {', '.join(unknown)}")
        self.template = template
        self.stack_name = stack_name
        self.parameters = {name: str(parameters.get(name, spec.get("Default"))) for name, spec in declared.items()}
        self.pseudo = {
            "AWS::StackName": stack_name,
            "AWS::Region": "us-east-1",
            "AWS::AccountId": "123456789012",
            "AWS::Partition": "aws",
        }
        self.conditions = {name: self.value(expr) for name, expr in template.get("Conditions", {}).items()}

    def value(self, expr: Any) -> Any:
        if isinstance(expr, list):
            return [self.value(item) for item in expr]
        if not isinstance(expr, dict):
            return expr
        if len(expr) == 1:
            ((key, arg),) = expr.items()
            if key == "Ref":
                if arg in self.parameters:
                    return self.parameters[arg]
                if arg in self.pseudo:
                    return self.pseudo[arg]
                return {"Ref": arg}  # a resource: left for the caller to map
            if key == "Fn::Sub":
                text = str(arg)
                for name, val in {**self.pseudo, **self.parameters}.items():
                    text = text.replace("${" + name + "}", val)
                return text
            if key == "Fn::If":
                condition, when_true, when_false = arg
                return self.value(when_true if self.conditions[condition] else when_false)
            if key == "Fn::Equals":
                left, right = (self.value(item) for item in arg)
                return left == right
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Condition":
                return self.conditions[arg]
        return {key: self.value(item) for key, item in expr.items()}


@dataclass(frozen=True)
class StackSpec:
    """What the local stack and the operator tools need to know about the deployed shape."""

    stack_name: str
    stage: str
    event_source: str
    bus_name: str
    rule_name: str
    event_pattern: dict[str, Any]
    rule_max_retry_attempts: int
    rule_max_event_age_seconds: int
    function_max_retry_attempts: int
    function_max_event_age_seconds: int
    function_timeout_seconds: int
    reserved_concurrency: int
    failed_events_queue_name: str
    failed_events_retention_seconds: int
    function_environment: dict[str, Any]


def stack_spec(
    stack_name: str, parameters: dict[str, str] | None = None, template: dict[str, Any] | None = None
) -> StackSpec:
    """Read the EndHandler's wiring out of the template for a given stack name and parameters."""
    template = template or load_template()
    resolver = Resolver(template, parameters or {}, stack_name)
    resources = template["Resources"]
    function = function_properties(template, "EndHandler")
    rule = function["Events"]["ConversationEnded"]["Properties"]
    invoke = function["EventInvokeConfig"]
    queue = resources["FailedEventsQueue"]["Properties"]
    bus = resolver.value(rule["EventBusName"])
    if isinstance(bus, dict):  # {"Ref": "EventBus"}: the bus the stack creates
        bus = resolver.value(resources[bus["Ref"]]["Properties"]["Name"])
    return StackSpec(
        stack_name=stack_name,
        stage=resolver.parameters["Stage"],
        event_source=resolver.parameters["EventSource"],
        bus_name=str(bus),
        rule_name=str(resolver.value(rule["RuleName"])),
        event_pattern=resolver.value(rule["Pattern"]),
        rule_max_retry_attempts=int(resolver.value(rule["RetryPolicy"]["MaximumRetryAttempts"])),
        rule_max_event_age_seconds=int(resolver.value(rule["RetryPolicy"]["MaximumEventAgeInSeconds"])),
        function_max_retry_attempts=int(resolver.value(invoke["MaximumRetryAttempts"])),
        function_max_event_age_seconds=int(resolver.value(invoke["MaximumEventAgeInSeconds"])),
        function_timeout_seconds=int(resolver.value(function["Timeout"])),
        reserved_concurrency=int(resolver.value(function["ReservedConcurrentExecutions"])),
        failed_events_queue_name=str(resolver.value(queue["QueueName"])),
        failed_events_retention_seconds=int(resolver.value(queue["MessageRetentionPeriod"])),
        function_environment=resolver.value(function["Environment"]["Variables"]),
    )


#: Values for every optional block of the template, so a scan of the transformed template sees
#: every resource (the Connect function, the email subscriptions, the SES sender ...).
ALL_BLOCKS = {
    "Stage": "live",
    "ConnectInstanceArn": "arn:aws:connect:us-east-1:123456789012:instance/0000",
    "AlarmEmail": "oncall@example.com",
    "NotificationEmail": "sales@example.com",
    "FollowUpFromEmail": "care@example.com",
}
#: What SAM generates from an ``AWS::Serverless::Function`` that a function's checkov skips cover.
_GENERATED_FROM_FUNCTION = ("Role", "Url")


def transformed_for_scanners(template: dict[str, Any] | None = None) -> dict[str, Any]:
    """The template as CloudFormation will run it (SAM transformed, every optional block on), for checkov.

    Scanning ``template.yaml`` itself, checkov never sees the roles and function URLs SAM
    generates, so its IAM checks guard nothing there. SAM does not carry a function's
    ``Metadata`` over to them, so the checkov skips written on a function (each with its reason)
    are copied to the role and URL generated from it; nothing else is skipped.
    """
    source = template if template is not None else load_template()
    expanded = sam_transform(source, ALL_BLOCKS)
    resources = expanded["Resources"]
    for logical_id, resource in source.get("Resources", {}).items():
        skips = resource.get("Metadata", {}).get("checkov", {}).get("skip")
        if resource.get("Type") != "AWS::Serverless::Function" or not skips:
            continue
        for suffix in _GENERATED_FROM_FUNCTION:
            generated = resources.get(f"{logical_id}{suffix}")
            if generated is not None and "checkov" not in generated.get("Metadata", {}):
                generated.setdefault("Metadata", {})["checkov"] = {"skip": copy.deepcopy(skips)}
    return expanded


def main(argv: list[str] | None = None) -> int:
    """``python -m aftercall_ops.emulator.template --transformed OUT``: write the transformed template as JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m aftercall_ops.emulator.template")
    parser.add_argument("--transformed", type=Path, required=True, help="where to write the transformed template")
    args = parser.parse_args(argv)
    args.transformed.parent.mkdir(parents=True, exist_ok=True)
    args.transformed.write_text(json.dumps(transformed_for_scanners(), indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


_SUB_REFERENCE = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.([A-Za-z0-9.]+))?\}")


class LocalResources:
    """Physical names and attributes of the template's resources as created locally (Ref and GetAtt)."""

    def __init__(self, stack_name: str) -> None:
        self.stack_name = stack_name
        self.refs: dict[str, str] = {}
        self.attributes: dict[str, dict[str, str]] = {}

    def add(self, logical_id: str, ref: str, **attributes: str) -> None:
        self.refs[logical_id] = ref
        self.attributes[logical_id] = attributes

    def value(self, resolved: Any, where: str) -> str:
        """A value the template resolver left with resource references, with the local names filled in."""
        if isinstance(resolved, bool):
            return "true" if resolved else "false"
        if isinstance(resolved, str | int | float):
            return self._substitute(str(resolved), where)
        if isinstance(resolved, dict) and len(resolved) == 1:
            ((key, arg),) = resolved.items()
            if key == "Ref" and isinstance(arg, str):
                return self._lookup(arg, None, where)
            if key == "Fn::GetAtt" and isinstance(arg, list) and len(arg) == 2:
                return self._lookup(str(arg[0]), str(arg[1]), where)
        raise RuntimeError(f"{where}: the local stack cannot resolve {resolved!r} (did template.yaml change?)")

    def _substitute(self, text: str, where: str) -> str:
        return _SUB_REFERENCE.sub(lambda match: self._lookup(match[1], match[2], where), text)

    def _lookup(self, logical_id: str, attribute: str | None, where: str) -> str:
        if logical_id not in self.refs:
            raise RuntimeError(
                f"{where} refers to {logical_id}, which the local stack does not create "
                "(did template.yaml change? teach aftercall_ops.emulator.stack about it)"
            )
        if attribute is None:
            return self.refs[logical_id]
        if attribute not in self.attributes[logical_id]:
            raise RuntimeError(f"{where} wants {logical_id}.{attribute}, which the local stack does not know")
        return self.attributes[logical_id][attribute]
