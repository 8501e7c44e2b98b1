"""Provisioning: the template's resources made in moto on loopback, with the names CloudFormation would
give them, the rule (its target: the delivery queue), and a CloudFormation stack whose outputs are the
template's Outputs resolved to the local values, so ``--stack NAME`` resolves as in AWS. Also how the
template runs each function (:meth:`Provisioner.function_config`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets as secrets_module
import string
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from aftercall_ops.emulator.account import (
    ACCOUNT_ID,
    LOCAL_ACCESS_KEY,
    LOCAL_SECRET_KEY,
    REGION,
    error_code,
    function_arn,
)
from aftercall_ops.emulator.template import LocalResources, Resolver, StackSpec

log = logging.getLogger("aftercall_ops.emulator")

RECEIVE_WAIT_SECONDS = 1
DELIVERY_TARGET_ID = "EndHandlerDelivery"
#: Held delivery messages are kept invisible in slices this long, renewed while they are worked on.
DELIVERY_VISIBILITY_SECONDS = 30
#: Logical ids the local stack treats specially: the function the rule feeds, the secret with the CRM token.
END_HANDLER = "EndHandler"
CRM_SECRET = "CrmSecret"  # noqa: S105 - a logical id in template.yaml, not a secret

# --- resources from the template -------------------------------------------------------------------

#: Resource types the local stack creates in moto or names locally. Others (alarms, KMS keys, log
#: groups, the layer, policies, subscriptions, the dashboard) have no local use and are skipped;
#: a reference to one from the functions' environment or the outputs is an error that names it.
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
FUNCTION_URL_TYPE = "AWS::Lambda::Url"
_NAME_PROPERTIES = {
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::Events::EventBus": "Name",
    "AWS::Scheduler::ScheduleGroup": "Name",
    "AWS::IAM::Role": "RoleName",
    **dict.fromkeys(FUNCTION_TYPES, "FunctionName"),
    FUNCTION_URL_TYPE: "FunctionName",
}
_QUEUE_ATTRIBUTES = ("MessageRetentionPeriod", "VisibilityTimeout", "DelaySeconds", "MaximumMessageSize")


@dataclass(frozen=True)
class PlannedResource:
    """A template resource the local stack makes, with its physical name."""

    logical_id: str
    kind: str
    name: str
    properties: dict[str, Any]


#: Names a moto server in this process already uses: moto's state is per process, not per server.
_CLAIMS: dict[str, str] = {}
_CLAIMS_LOCK = threading.Lock()


class Provisioner:
    """moto on loopback and the template's resources in it; :meth:`delete_resources` undoes them."""

    def __init__(
        self,
        stack_name: str,
        template: dict[str, Any],
        resolver: Resolver,
        spec: StackSpec,
        *,
        moto_port: int,
        workers: int,
        crm_secret: Callable[[Any], Any],
        moto_server: Callable[..., Any] | None = None,
    ) -> None:
        self.stack_name = stack_name
        self._template = template
        self._resolver = resolver
        self.spec = spec
        self.moto_port = moto_port
        self.workers = workers
        self._crm_secret = crm_secret
        #: moto's ThreadedMotoServer unless given (bench/burst.py runs moto in a child process).
        self._moto_server = moto_server
        #: Every template parameter with the value this stack uses (defaults filled in).
        self.template_parameters: dict[str, str] = dict(resolver.parameters)
        self.moto: Any = None
        self.moto_url = ""
        self.clients: dict[str, Any] = {}
        self.resources = LocalResources(stack_name)
        self._teardown: list[tuple[str, str]] = []
        self.delivery_queue_url = ""
        self.failed_events_queue_url = ""
        self._claims: list[str] = []

    def claim_names(self, planned: list[PlannedResource]) -> None:
        """moto keeps one state per process: refuse a second live stack that would share names."""
        self._claims = claim([f"stack {self.stack_name}", *(f"{p.kind} {p.name}" for p in planned)], self.stack_name)

    def release_names(self) -> None:
        release(self._claims)
        self._claims = []

    def start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        from aftercall_ops.emulator import moto_fixes  # imported here: it patches moto, which loads slowly

        moto_fixes.apply()  # SQS deletes that lose messages, aws.* sources PutEvents must refuse; see moto_fixes.py
        # werkzeug logs every request moto serves to stderr; only its errors are worth seeing.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server_class = self._moto_server or ThreadedMotoServer
        server = server_class(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        server.start()
        self.moto = server
        host, port = server.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        session = boto3.session.Session(
            aws_access_key_id=LOCAL_ACCESS_KEY, aws_secret_access_key=LOCAL_SECRET_KEY, region_name=REGION
        )
        config = Config(
            connect_timeout=5,
            read_timeout=RECEIVE_WAIT_SECONDS + 20,
            retries={"total_max_attempts": 2, "mode": "standard"},
            max_pool_connections=max(10, self.workers + 4),
        )
        for service in ("events", "sqs", "sns", "dynamodb", "secretsmanager", "scheduler", "cloudformation"):
            self.clients[service] = session.client(service, endpoint_url=self.moto_url, config=config)

    # --- resources -------------------------------------------------------------------------------
    def plan_resources(self) -> list[PlannedResource]:
        """The template's resources the local stack makes, with their physical names (as CloudFormation
        would name them, minus the random suffix), honouring the template's conditions."""
        planned = []
        for logical_id, resource in self._template["Resources"].items():
            condition = resource.get("Condition")
            if condition is not None and not self._resolver.conditions[condition]:
                continue
            kind = str(resource["Type"])
            name_property = _NAME_PROPERTIES.get(kind)
            if name_property is None:
                continue  # no local use (alarms, keys, log groups, policies, ...)
            properties = resource.get("Properties", {})
            if name_property in properties:
                name = str(self._resolver.value(properties[name_property]))
            else:
                name = f"{self.stack_name}-{logical_id}"
            planned.append(PlannedResource(logical_id, kind, name, properties))
            if kind in FUNCTION_TYPES and "FunctionUrlConfig" in properties:
                # SAM's FunctionUrlConfig makes `<Function>Url` (AWS::Lambda::Url); served on its own port.
                planned.append(PlannedResource(f"{logical_id}Url", FUNCTION_URL_TYPE, name, properties))
        buses = {p.name for p in planned if p.kind == "AWS::Events::EventBus"}
        if self.spec.bus_name != "default" and self.spec.bus_name not in buses:
            # ExistingEventBusName: in AWS it exists already; locally it has to be made all the same.
            planned.append(PlannedResource("", "AWS::Events::EventBus", self.spec.bus_name, {}))
        return planned

    def create_resources(self, planned_resources: list[PlannedResource], delivery_queue_name: str) -> None:
        """Every planned resource, then the delivery queue the rule targets locally (see :mod:`async_invoke`)."""
        for planned in planned_resources:
            self._create(planned)
        self.failed_events_queue_url = self.resources.refs["FailedEventsQueue"]
        self.delivery_queue_url = self._fresh_queue(
            delivery_queue_name, {"VisibilityTimeout": str(DELIVERY_VISIBILITY_SECONDS)}
        )

    def _create(self, planned: PlannedResource) -> None:
        """Create one resource in moto (or just name it, for functions and roles) and record Ref/GetAtt."""
        kind, name, properties, resources = planned.kind, planned.name, planned.properties, self.resources
        clients = self.clients
        if kind == "AWS::SQS::Queue":
            attributes = {
                key: str(self._resolver.value(properties[key])) for key in _QUEUE_ATTRIBUTES if key in properties
            }
            url = self._fresh_queue(name, attributes)
            resources.add(planned.logical_id, url, Arn=self._queue_arn(url), QueueName=name, QueueUrl=url)
        elif kind == "AWS::SNS::Topic":
            arn = str(clients["sns"].create_topic(Name=name)["TopicArn"])
            self._teardown.append(("topic", arn))
            resources.add(planned.logical_id, arn, TopicArn=arn, TopicName=name)
        elif kind == "AWS::DynamoDB::Table":
            dynamodb = clients["dynamodb"]
            with contextlib.suppress(dynamodb.exceptions.ResourceNotFoundException):
                dynamodb.delete_table(TableName=name)  # left over from a stack that died in this process
            table = dynamodb.create_table(
                TableName=name,
                AttributeDefinitions=self._resolver.value(properties["AttributeDefinitions"]),
                KeySchema=self._resolver.value(properties["KeySchema"]),
                BillingMode=str(self._resolver.value(properties.get("BillingMode", "PAY_PER_REQUEST"))),
            )["TableDescription"]
            self._teardown.append(("table", name))
            ttl = properties.get("TimeToLiveSpecification", {})
            if ttl.get("AttributeName"):
                dynamodb.update_time_to_live(
                    TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True}
                )
            resources.add(planned.logical_id, name, Arn=str(table["TableArn"]))
        elif kind == "AWS::SecretsManager::Secret":
            secrets = clients["secretsmanager"]
            with contextlib.suppress(secrets.exceptions.ResourceNotFoundException):
                secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
            value = secret_value(planned, self._resolver, self._crm_secret)
            arn = str(secrets.create_secret(Name=name, Description="aftercall local stack", SecretString=value)["ARN"])
            self._teardown.append(("secret", name))
            resources.add(planned.logical_id, arn, Id=arn)
        elif kind == "AWS::Events::EventBus":
            if name != "default":
                try:
                    clients["events"].create_event_bus(Name=name)
                except ClientError as exc:
                    if error_code(exc) != "ResourceAlreadyExistsException":
                        raise
                self._teardown.append(("bus", name))
            arn = f"arn:aws:events:{REGION}:{ACCOUNT_ID}:event-bus/{name}"
            if planned.logical_id:
                resources.add(planned.logical_id, name, Arn=arn, Name=name)
        elif kind == "AWS::Scheduler::ScheduleGroup":
            scheduler = clients["scheduler"]
            # moto answers deleting a missing group with a 500 (KeyError), so look first.
            with contextlib.suppress(scheduler.exceptions.ResourceNotFoundException):
                scheduler.get_schedule_group(Name=name)
                scheduler.delete_schedule_group(Name=name)
            arn = str(scheduler.create_schedule_group(Name=name)["ScheduleGroupArn"])
            self._teardown.append(("schedule group", name))
            resources.add(planned.logical_id, name, Arn=arn)
        elif kind == "AWS::IAM::Role":
            # Nothing local assumes roles (moto's Scheduler never fires): the ARN is all anyone reads.
            resources.add(planned.logical_id, name, Arn=f"arn:aws:iam::{ACCOUNT_ID}:role/{name}", RoleId=name)
        elif kind in FUNCTION_TYPES:
            resources.add(planned.logical_id, name, Arn=function_arn(name))
        elif kind == FUNCTION_URL_TYPE:
            pass  # served once the function runs (see _start_functions)
        else:
            raise AssertionError(f"unplanned resource type {kind}")

    def create_rule(self) -> None:
        """The template's rule, pattern and retry policy as they are; only the target is the delivery queue."""
        spec, events = self.spec, self.clients["events"]
        events.put_rule(
            Name=spec.rule_name,
            EventBusName=spec.bus_name,
            EventPattern=json.dumps(spec.event_pattern),
            State="ENABLED",
            Description="Conversation Ended events to the EndHandler (locally: to the delivery queue)",
        )
        self._teardown.append(("rule", spec.rule_name))
        answer = events.put_targets(
            Rule=spec.rule_name,
            EventBusName=spec.bus_name,
            Targets=[
                {
                    "Id": DELIVERY_TARGET_ID,
                    "Arn": self._queue_arn(self.delivery_queue_url),
                    # Without a transformer moto's SQS deliveries lack `account`; this delivers the whole event.
                    "InputTransformer": {"InputPathsMap": {}, "InputTemplate": "<aws.events.event.json>"},
                    "RetryPolicy": {
                        "MaximumRetryAttempts": spec.rule_max_retry_attempts,
                        "MaximumEventAgeInSeconds": spec.rule_max_event_age_seconds,
                    },
                    "DeadLetterConfig": {"Arn": self.resources.attributes["FailedEventsQueue"]["Arn"]},
                }
            ],
        )
        if answer.get("FailedEntryCount"):
            raise RuntimeError(f"moto refused the rule target: {answer.get('FailedEntries')}")

    def _fresh_queue(self, name: str, attributes: dict[str, str]) -> str:
        """An empty queue with these attributes (one left over in this process is replaced)."""
        sqs = self.clients["sqs"]
        try:
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
        except ClientError as exc:
            if "NonExistentQueue" not in error_code(exc):
                raise
        url = str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
        self._teardown.append(("queue", url))
        return url

    def _queue_arn(self, url: str) -> str:
        attributes = self.clients["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])

    def create_cloudformation_stack(self, timeout_override: float | None) -> dict[str, str]:
        """Register the stack in moto so ``describe_stacks`` resolves ``--stack NAME`` as in AWS.

        The template's Outputs, each resolved to its local value; the one resource is a marker
        parameter (CloudFormation wants one resource, and the real ones exist already).
        """
        outputs: dict[str, str] = {}
        for key, output in self._template.get("Outputs", {}).items():
            condition = output.get("Condition")
            if condition is not None and not self._resolver.conditions[condition]:
                continue
            outputs[key] = self.resources.value(self._resolver.value(output["Value"]), f"output {key}")
        if timeout_override is not None and "EndHandlerTimeoutSeconds" in outputs:
            # Replay waits longer than this: an override (tests) is rounded up to whole seconds.
            outputs["EndHandlerTimeoutSeconds"] = str(math.ceil(timeout_override))
        description = " ".join(str(self._template.get("Description", "aftercall")).split())
        template = {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": f"{description} (local stack)"[:1024],
            "Parameters": {name: {"Type": "String"} for name in self.template_parameters},
            "Resources": {
                "LocalStackMarker": {
                    "Type": "AWS::SSM::Parameter",
                    "Properties": {
                        "Name": f"/aftercall/local/{self.stack_name}",
                        "Type": "String",
                        "Value": "this stack runs on the aftercall local stack (moto)",
                    },
                }
            },
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
        cloudformation = self.clients["cloudformation"]
        with contextlib.suppress(ClientError):
            cloudformation.describe_stacks(StackName=self.stack_name)
            cloudformation.delete_stack(StackName=self.stack_name)  # left over in this process
        cloudformation.create_stack(
            StackName=self.stack_name,
            TemplateBody=json.dumps(template),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in self.template_parameters.items()],
            Tags=[{"Key": "aftercall:local", "Value": "true"}],
        )
        self._teardown.append(("stack", self.stack_name))
        stack = cloudformation.describe_stacks(StackName=self.stack_name)["Stacks"][0]
        return {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}

    def delete_resources(self) -> None:
        """Best effort: leave moto as we found it, so a later stack in this process starts clean."""
        while self._teardown:
            kind, name = self._teardown.pop()
            try:
                delete_resource(self.clients, self.spec.bus_name, kind, name)
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not delete local %s %s: %s", kind, name, exc)
        self.clients.clear()

    def stop_moto(self) -> None:
        if self.moto is not None:
            self.moto.stop()
            self.moto = None


def secret_value(planned: PlannedResource, resolver: Resolver, crm_secret: Callable[[Any], Any]) -> str:
    """The secret as CloudFormation would make it (generated key included); the CRM secret is what
    the stack's ``crm_secret`` makes of it (the fake CRM's token: the handler authenticates against
    it exactly as against the real CRM)."""
    properties = planned.properties
    if "SecretString" in properties:
        value: Any = str(resolver.value(properties["SecretString"]))
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    else:
        generate = resolver.value(properties.get("GenerateSecretString", {}))
        value = json.loads(generate.get("SecretStringTemplate") or "{}") if generate else {}
        alphabet = string.ascii_letters + string.digits
        if generate and not generate.get("ExcludePunctuation"):
            alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
        generated = "".join(secrets_module.choice(alphabet) for _ in range(int(generate.get("PasswordLength", 32))))
        if generate and generate.get("GenerateStringKey"):
            value[str(generate["GenerateStringKey"])] = generated
        elif generate:
            value = generated
    if planned.logical_id == CRM_SECRET:
        value = crm_secret(value)
    return value if isinstance(value, str) else json.dumps(value)


def claim(names: list[str], owner: str) -> list[str]:
    """Claim ``names`` for ``owner`` in this process, or raise naming the stack that has one of them."""
    with _CLAIMS_LOCK:
        taken = [name for name in names if name in _CLAIMS]
        if taken:
            raise RuntimeError(
                f"another local stack in this process ({_CLAIMS[taken[0]]}) already uses {', '.join(taken)}; "
                "moto's state is per process, so stop it first or use another stack name or Stage"
            )
        for name in names:
            _CLAIMS[name] = owner
    return names


def release(names: list[str]) -> None:
    with _CLAIMS_LOCK:
        for name in names:
            _CLAIMS.pop(name, None)


def delete_resource(clients: Mapping[str, Any], bus: str, kind: str, name: str) -> None:
    """Delete one resource this module created (``kind`` as recorded for the teardown)."""
    if kind == "stack":
        clients["cloudformation"].delete_stack(StackName=name)
    elif kind == "rule":
        clients["events"].remove_targets(Rule=name, EventBusName=bus, Ids=[DELIVERY_TARGET_ID])
        clients["events"].delete_rule(Name=name, EventBusName=bus)
    elif kind == "secret":
        clients["secretsmanager"].delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    elif kind == "table":
        clients["dynamodb"].delete_table(TableName=name)
    elif kind == "queue":
        clients["sqs"].delete_queue(QueueUrl=name)
    elif kind == "topic":
        clients["sns"].delete_topic(TopicArn=name)
    elif kind == "schedule group":
        clients["scheduler"].delete_schedule_group(Name=name)
    elif kind == "bus":
        clients["events"].delete_event_bus(Name=name)
    else:
        raise AssertionError(f"unknown resource kind {kind}")


# --- the functions ------------------------------------------------------------------------------
