"""Least privilege and encryption at rest, checked on the template *after* the SAM transform.

``make iac-check`` runs checkov and the serverless cfn-lint rules; these tests pin down what
those tools cannot see or do not ask: the roles SAM generates (with the statements SAM adds),
every wildcard resource named with the reason it is unavoidable, encryption of every store, and
that every skipped tool check carries its justification next to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from aftercall_ops.emulator.template import PROJECT_ROOT, TEMPLATE_PATH, load_template, sam_transform

#: Values for every optional block, so conditional resources are expanded too.
PARAMETERS = {
    "Stage": "live",
    "ConnectInstanceArn": "arn:aws:connect:us-east-1:123456789012:instance/0000",
    "AlarmEmail": "oncall@example.com",
    "NotificationEmail": "sales@example.com",
    "FollowUpFromEmail": "care@example.com",
}

#: The only statements in any role whose resource is "*", and why nothing narrower exists.
UNAVOIDABLE_STAR_RESOURCES = {
    # SNS Publish to a phone number (SMS) has no resource ARN; the role's Deny statement keeps it
    # from publishing to any topic, which test_template.py checks.
    ("FollowUpFunctionRole", "SmsToPhoneNumbers", "sns:Publish"),
}

#: ARN patterns with a wildcard in a role, each narrower than "*" and why it cannot be exact.
DOCUMENTED_ARN_PATTERNS = {
    # Schedule names are made per conversation; the pattern is this stack's schedule group only.
    ("EndHandlerRole", "ScheduleFollowUpsInOurGroupOnly"),
    # The sender identity is a domain or an address the operator verified; ses:FromAddress pins it.
    ("FollowUpFunctionRole", "EmailFromTheConfiguredSenderOnly"),
    # A Deny: no topic anywhere.
    ("FollowUpFunctionRole", "NoTopicPublishing"),
    # The FollowUp function and its versions/aliases (Scheduler may target a qualified ARN).
    ("SchedulerRole", "invoke-follow-up#0"),
}

#: Managed policies SAM attaches to every function role it generates, and why they are acceptable:
#: both grant writes only (logs, traces), and X-Ray's actions have no resource-level permissions.
ACCEPTED_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
#: The role SAM generates for CodeDeploy (DeploymentPreference) carries AWS's policy for Lambda
#: deployments: update and read aliases, read the deployment's alarms, invoke *CodeDeployHook_*
#: functions only. CodeDeploy assumes it; no function does.
CODEDEPLOY_ROLE = "CodeDeployServiceRole"
CODEDEPLOY_POLICY = "arn:aws:iam::aws:policy/service-role/AWSCodeDeployRoleForLambda"


@pytest.fixture(scope="module")
def expanded() -> dict[str, Any]:
    resources: dict[str, Any] = sam_transform(load_template(), PARAMETERS)["Resources"]
    return resources


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r.get("Properties", {}) for name, r in resources.items() if r["Type"] == kind}


def _role_statements(resources: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(role, statement id, statement) for every inline statement of every role and IAM policy."""
    for role, props in _of_type(resources, "AWS::IAM::Role").items():
        for policy in props.get("Policies", []):
            for index, statement in enumerate(policy["PolicyDocument"]["Statement"]):
                yield role, statement.get("Sid", f"{policy['PolicyName']}#{index}"), statement
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for name, props in _of_type(resources, kind).items():
            for index, statement in enumerate(props["PolicyDocument"]["Statement"]):
                yield name, statement.get("Sid", f"{name}#{index}"), statement


def _has_wildcard(resource: Any) -> bool:
    """A resource that is ``"*"`` or an ARN pattern containing ``*`` (intrinsics looked into)."""
    if isinstance(resource, str):
        return "*" in resource
    if isinstance(resource, dict):
        return any(_has_wildcard(v) for v in resource.values())
    if isinstance(resource, list):
        return any(_has_wildcard(v) for v in resource)
    return False


def test_the_expanded_template_has_the_roles_we_expect_to_check(expanded: dict[str, Any]) -> None:
    # Given the template with every optional block on, after the SAM transform
    roles = set(_of_type(expanded, "AWS::IAM::Role"))
    # Then every function has a generated role, plus the Scheduler's (so the checks below see them all)
    assert roles == {
        "EndHandlerRole",
        "FollowUpFunctionRole",
        "IngestFunctionRole",
        "ConnectIngestFunctionRole",
        "SchedulerRole",
        "CodeDeployServiceRole",  # SAM's, for the EndHandler's gradual deployment (DeploymentPreference)
    }


def test_no_role_allows_every_action_or_a_whole_service(expanded: dict[str, Any]) -> None:
    # Given every statement of every role (including those SAM adds, e.g. for OnFailure)
    statements = list(_role_statements(expanded))
    assert statements
    # Then no statement names "*" or a service wildcard such as "s3:*" as an action
    broad = [
        (role, sid, action)
        for role, sid, statement in statements
        for action in _as_list(statement.get("Action", []))
        if action == "*" or str(action).endswith(":*")
    ]
    assert broad == []
    # And none uses NotAction/NotResource, which grant everything but what they name
    assert [(r, s) for r, s, st in statements if "NotAction" in st or "NotResource" in st] == []


def test_a_star_resource_appears_only_where_nothing_narrower_exists(expanded: dict[str, Any]) -> None:
    # Given every Allow statement of every role
    star = {
        (role, sid, action)
        for role, sid, statement in _role_statements(expanded)
        if statement["Effect"] == "Allow" and "*" in _as_list(statement["Resource"])
        for action in _as_list(statement["Action"])
    }
    # Then a "*" resource appears only in the statements documented above as unavoidable
    assert star == UNAVOIDABLE_STAR_RESOURCES


def test_arn_patterns_with_wildcards_are_the_documented_ones(expanded: dict[str, Any]) -> None:
    # Given every statement of every role whose resource is an ARN pattern (not "*" itself)
    patterns = {
        (role, sid)
        for role, sid, statement in _role_statements(expanded)
        if "*" not in _as_list(statement["Resource"]) and _has_wildcard(statement["Resource"])
    }
    # Then each is one of the documented, scoped patterns (a new one must be justified above)
    assert patterns == DOCUMENTED_ARN_PATTERNS


def test_function_roles_carry_only_the_accepted_managed_policies(expanded: dict[str, Any]) -> None:
    # Given the roles
    roles = _of_type(expanded, "AWS::IAM::Role")
    attached = {(role, arn) for role, props in roles.items() for arn in props.get("ManagedPolicyArns", [])}
    # Then the only managed policies of the functions' roles are SAM's logging and tracing ones (write-only)
    assert {arn for role, arn in attached if role != CODEDEPLOY_ROLE} == ACCEPTED_MANAGED_POLICIES
    # And the CodeDeploy role has only AWS's Lambda deployment policy, and only CodeDeploy may assume it
    assert roles[CODEDEPLOY_ROLE]["ManagedPolicyArns"] == [CODEDEPLOY_POLICY]
    assert "Policies" not in roles[CODEDEPLOY_ROLE]
    (trust,) = roles[CODEDEPLOY_ROLE]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": ["codedeploy.amazonaws.com"]}
    # And no role is given administrator, power-user or full-access policies
    assert not any(re.search(r"Administrator|PowerUser|FullAccess", arn) for _, arn in attached)


def test_pass_role_is_limited_to_the_scheduler(expanded: dict[str, Any]) -> None:
    # Given the statements that allow iam:PassRole
    passes = [
        (role, statement)
        for role, _, statement in _role_statements(expanded)
        if "iam:PassRole" in _as_list(statement["Action"])
    ]
    # Then there is one, passing only the Scheduler role, only to EventBridge Scheduler
    assert [role for role, _ in passes] == ["EndHandlerRole"]
    (_, statement) = passes[0]
    assert statement["Resource"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}


def test_resource_policies_allow_no_wildcard_action_but_the_key_administration(expanded: dict[str, Any]) -> None:
    # Given the queue policy and the key policy
    queue_policies = _of_type(expanded, "AWS::SQS::QueuePolicy")
    keys = _of_type(expanded, "AWS::KMS::Key")
    documents = [p["PolicyDocument"] for p in queue_policies.values()] + [k["KeyPolicy"] for k in keys.values()]
    assert documents
    broad = [
        statement.get("Sid")
        for document in documents
        for statement in document["Statement"]
        if statement["Effect"] == "Allow"
        and any(a == "*" or str(a).endswith(":*") for a in _as_list(statement["Action"]))
    ]
    # Then the only broad Allow is the key's account administration: AWS's default key policy
    # statement, which hands control of the key to the account's IAM policies (without it the key
    # could become unmanageable)
    assert broad == ["AccountAdministers"]
    (admin,) = [s for s in keys["EncryptionKey"]["KeyPolicy"]["Statement"] if s.get("Sid") == "AccountAdministers"]
    assert admin["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}


def test_the_failed_events_queue_takes_messages_only_from_our_rules_and_over_tls(expanded: dict[str, Any]) -> None:
    # Given the failed-events queue's policy
    statements = expanded["FailedEventsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    denies = [s for s in statements if s["Effect"] == "Deny"]
    # Then EventBridge may send only on behalf of our rules (no other account's rule can fill it)
    assert [s["Principal"] for s in allows] == [{"Service": "events.amazonaws.com"}]
    assert all(set(s["Condition"]["ArnEquals"]) == {"aws:SourceArn"} for s in allows)
    # And every request over plain HTTP is refused
    assert [s["Condition"] for s in denies] == [{"Bool": {"aws:SecureTransport": "false"}}]


def test_every_queue_table_topic_log_group_and_secret_is_encrypted_at_rest(expanded: dict[str, Any]) -> None:
    # Given every store of data in the stack
    queues = _of_type(expanded, "AWS::SQS::Queue")
    tables = _of_type(expanded, "AWS::DynamoDB::Table")
    topics = _of_type(expanded, "AWS::SNS::Topic")
    log_groups = _of_type(expanded, "AWS::Logs::LogGroup")
    secrets = _of_type(expanded, "AWS::SecretsManager::Secret")
    assert queues
    assert tables
    assert topics
    assert log_groups
    assert secrets
    stack_key = {"Ref": "EncryptionKey"}
    stack_key_arn = {"Fn::GetAtt": ["EncryptionKey", "Arn"]}
    # Then queues use SQS-managed keys or a KMS key, tables KMS (SSEEnabled), and topics, log
    # groups and secrets the stack's own key
    assert {
        n for n, q in queues.items() if q.get("SqsManagedSseEnabled") is not True and "KmsMasterKeyId" not in q
    } == set()
    assert {n for n, t in tables.items() if t.get("SSESpecification", {}).get("SSEEnabled") is not True} == set()
    assert {n for n, t in topics.items() if t.get("KmsMasterKeyId") != stack_key} == set()
    assert {n for n, g in log_groups.items() if g.get("KmsKeyId") != stack_key_arn} == set()
    assert {n for n, s in secrets.items() if s.get("KmsKeyId") != stack_key} == set()
    # And the key rotates
    assert expanded["EncryptionKey"]["Properties"]["EnableKeyRotation"] is True


def test_roles_that_read_an_encrypted_secret_may_decrypt_it(expanded: dict[str, Any]) -> None:
    # Given the roles that read a secret the stack encrypts with its key
    readers = {
        role
        for role, _, statement in _role_statements(expanded)
        if "secretsmanager:GetSecretValue" in _as_list(statement["Action"])
    }
    decryptors = {
        role
        for role, _, statement in _role_statements(expanded)
        if "kms:Decrypt" in _as_list(statement["Action"])
        and statement["Resource"] == {"Fn::GetAtt": ["EncryptionKey", "Arn"]}
    }
    # Then each of them may decrypt with that key (or reading the secret would fail in AWS)
    assert readers == {"EndHandlerRole", "IngestFunctionRole"}
    assert readers <= decryptors


def test_every_function_logs_to_its_own_encrypted_group_with_retention(expanded: dict[str, Any]) -> None:
    # Given every Lambda function (what serverless rule WS1004 cannot follow: LoggingConfig)
    functions = _of_type(expanded, "AWS::Lambda::Function")
    log_groups = _of_type(expanded, "AWS::Logs::LogGroup")
    assert functions
    for name, function in functions.items():
        # Then it logs JSON to a log group of the stack that has a retention and the stack's key
        config = function["LoggingConfig"]
        assert config["LogFormat"] == "JSON", name
        group = log_groups[config["LogGroup"]["Ref"]]
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
        assert group["KmsKeyId"] == {"Fn::GetAtt": ["EncryptionKey", "Arn"]}, name


def test_only_the_ingest_url_is_public(expanded: dict[str, Any]) -> None:
    # Given the function URLs and the Lambda permissions
    urls = _of_type(expanded, "AWS::Lambda::Url")
    permissions = _of_type(expanded, "AWS::Lambda::Permission")
    # Then the one URL without IAM auth is the ingest webhook (vendors sign with HMAC instead)
    assert {name: url["AuthType"] for name, url in urls.items()} == {"IngestFunctionUrl": "NONE"}
    # And anyone may invoke only the ingest function, and only through its URL
    public = {name: p for name, p in permissions.items() if p["Principal"] == "*"}
    assert {p["FunctionName"]["Ref"] for p in public.values()} == {"IngestFunction"}
    for name, permission in public.items():
        through_url = (
            permission["Action"] == "lambda:InvokeFunctionUrl" and permission["FunctionUrlAuthType"] == "NONE"
        ) or (permission["Action"] == "lambda:InvokeFunction" and permission.get("InvokedViaFunctionUrl") is True)
        assert through_url, name
    # And every other permission names a service principal with the source it comes from
    for name, permission in permissions.items():
        if name not in public:
            assert permission["Principal"].endswith(".amazonaws.com"), name
            assert "SourceArn" in permission, name


# --- every skipped check is justified next to the skip --------------------------------------------


def _checkov_skips(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            yield name, skip


def test_every_checkov_skip_names_one_check_and_says_why() -> None:
    # Given the checkov skips in the template's resource metadata
    skips = list(_checkov_skips(load_template()))
    assert skips
    # Then each names one specific check and carries a reason of some substance
    for name, skip in skips:
        assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), (name, skip)
        assert len(str(skip.get("comment", "")).split()) >= 8, (name, skip)
    # And nothing is skipped for the whole template or from the command line
    assert "checkov" not in load_template().get("Metadata", {})
    assert not (PROJECT_ROOT / ".checkov.yaml").exists()
    assert not (PROJECT_ROOT / ".checkov.yml").exists()
    assert "--skip-check" not in (PROJECT_ROOT / "Makefile").read_text()


def test_every_cfn_lint_ignore_names_its_rules_and_has_a_comment_above_it() -> None:
    # Given the template's text (the reasons are YAML comments, which a parser drops)
    lines = TEMPLATE_PATH.read_text(encoding="utf-8").splitlines()
    ignores = [number for number, line in enumerate(lines) if "ignore_checks:" in line]
    assert ignores
    for number in ignores:
        # Then each ignore lists specific rule ids, right below a comment that gives the reason
        assert re.fullmatch(r"\s*ignore_checks: \[[A-Z]+\d+(, [A-Z]+\d+)*\]", lines[number]), lines[number]
        assert lines[number - 1].strip().startswith("#"), lines[number]
    # And no rule is ignored for the whole template
    assert "cfn-lint" not in load_template().get("Metadata", {})


def test_make_test_runs_the_iac_checks() -> None:
    # Given the Makefile
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    (test_target,) = re.findall(r"^test:(.*)$", makefile, flags=re.MULTILINE)
    # Then `make test` runs iac-check, which runs checkov offline and the serverless rules
    assert "iac-check" in test_target.split()
    assert "--skip-download" in makefile
    assert "BC_SKIP_MAPPING=TRUE" in makefile
    assert "-a cfn_lint_serverless.rules" in makefile
