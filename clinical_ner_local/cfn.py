"""Read what CDK synthesized: state machine definitions and Lambda settings, tokens resolved.

Local mode executes the state machines exactly as ``cdk synth`` writes them. A synthesized
``AWS::StepFunctions::StateMachine`` carries its definition as ``DefinitionString``: a JSON text
or an ``Fn::Join`` of JSON fragments and CloudFormation tokens (``Ref``, ``Fn::GetAtt``,
``Fn::ImportValue``, ``Fn::Sub`` for image URIs, pseudo parameters). `TemplateResolver` turns
each token into the value CloudFormation would produce, with local stand-ins for physical ids:

* a resource's name property when the template sets one (``FunctionName``, ``TopicName``,
  ``ModelPackageGroupName``, ...), else its logical id (lower-cased for S3 buckets);
* ARNs built from those names in the resolver's region/account
  (``arn:aws:lambda:us-east-1:123456789012:function:clinical-ner-dev-gate-model``);
* explicit overrides per logical id (``{"Lake5F1B88EA": "clinical-ner-local-lake"}`` for a
  ``Ref``, ``{"Lake5F1B88EA.Arn": ...}`` for an ``Fn::GetAtt``), which take precedence.

A token it cannot resolve raises `UnresolvedTokenError` naming the token: a definition is never
run with a placeholder in it. `CloudAssembly` reads a ``cdk.out`` directory (or synthesizes the
app with `synthesize_app`) and resolves cross-stack imports through the exporting stack.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CloudAssembly",
    "LambdaFunctionInfo",
    "StateMachineInfo",
    "TemplateResolver",
    "UnresolvedTokenError",
    "resolve_definition",
    "synthesize_app",
]

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"


class UnresolvedTokenError(ValueError):
    """A CloudFormation token has no local value (or uses an unsupported intrinsic)."""


# Name property per resource type (what Ref / the name part of an ARN is when it is set).
_NAME_PROPERTY = {
    "AWS::Lambda::Function": "FunctionName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::Glue::Job": "Name",
    "AWS::Glue::Crawler": "Name",
    "AWS::Events::Rule": "Name",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::SageMaker::ModelPackageGroup": "ModelPackageGroupName",
    "AWS::SageMaker::Endpoint": "EndpointName",
    "AWS::SageMaker::EndpointConfig": "EndpointConfigName",
    "AWS::SageMaker::Model": "ModelName",
    "AWS::SageMaker::MlflowTrackingServer": "TrackingServerName",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::Athena::WorkGroup": "Name",
    "AWS::Lambda::LayerVersion": "LayerName",
    "AWS::ECR::Repository": "RepositoryName",
    "AWS::KMS::Alias": "AliasName",
}
# Resource types whose Ref is an ARN rather than a name or id.
_REF_IS_ARN = {
    "AWS::SNS::Topic",
    "AWS::StepFunctions::StateMachine",
    "AWS::SageMaker::ModelPackageGroup",
    "AWS::SageMaker::Endpoint",
    "AWS::SageMaker::EndpointConfig",
    "AWS::SageMaker::Model",
    "AWS::IAM::ManagedPolicy",
    "AWS::Lambda::LayerVersion",
}
# Resource types whose Ref is an EC2-style id with this prefix.
_EC2_ID_PREFIX = {
    "AWS::EC2::VPC": "vpc",
    "AWS::EC2::Subnet": "subnet",
    "AWS::EC2::SecurityGroup": "sg",
    "AWS::EC2::RouteTable": "rtb",
    "AWS::EC2::VPCEndpoint": "vpce",
    "AWS::EC2::InternetGateway": "igw",
    "AWS::EC2::NatGateway": "nat",
}


def _digest(text: str, n: int = 17) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


class TemplateResolver:
    """Evaluates CloudFormation intrinsic functions of one stack template to local values."""

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        stack_name: str = "Stack",
        region: str = DEFAULT_REGION,
        account: str = DEFAULT_ACCOUNT,
        overrides: Mapping[str, Any] | None = None,
        import_value: Callable[[str], Any] | None = None,
    ) -> None:
        self.template = template
        self.resources: Mapping[str, Any] = template.get("Resources", {})
        self.parameters: Mapping[str, Any] = template.get("Parameters", {}) or {}
        self.stack_name = stack_name
        self.region = region
        self.account = account
        self.partition = "aws"
        self.overrides = dict(overrides or {})
        self._import_value = import_value
        self._resolving: set[str] = set()

    # -- pseudo parameters and resources -----------------------------------------------------

    def _pseudo(self, name: str) -> str | None:
        return {
            "AWS::Partition": self.partition,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account}:stack/"
            f"{self.stack_name}/{_digest(self.stack_name, 8)}",
            "AWS::NoValue": None,
        }.get(name, "\0missing")

    def _resource(self, logical_id: str, token: str) -> Mapping[str, Any]:
        res = self.resources.get(logical_id)
        if res is None:
            raise UnresolvedTokenError(
                f"{token}: no resource or parameter {logical_id!r} in stack {self.stack_name}"
            )
        return res

    def physical_name(self, logical_id: str) -> str:
        """The resource's name: its name property if set, else its logical id."""
        if logical_id in self.overrides:
            return str(self.overrides[logical_id]).rsplit(":", 1)[-1].rsplit("/", 1)[-1]
        res = self._resource(logical_id, f"name of {logical_id}")
        rtype = res.get("Type", "")
        prop = _NAME_PROPERTY.get(rtype)
        props = res.get("Properties", {}) or {}
        if prop and prop in props:
            key = f"{logical_id}#name"
            if key in self._resolving:
                raise UnresolvedTokenError(f"circular name of {logical_id}")
            self._resolving.add(key)
            try:
                return str(self.resolve(props[prop]))
            finally:
                self._resolving.discard(key)
        if rtype == "AWS::Glue::Database":
            return str(self.resolve(props.get("DatabaseInput", {}).get("Name", logical_id)))
        if rtype == "AWS::S3::Bucket":
            return logical_id.lower()
        return logical_id

    def _arn(self, logical_id: str, rtype: str) -> str:
        name = self.physical_name(logical_id)
        r, a, p = self.region, self.account, self.partition
        arns = {
            "AWS::Lambda::Function": f"arn:{p}:lambda:{r}:{a}:function:{name}",
            "AWS::SNS::Topic": f"arn:{p}:sns:{r}:{a}:{name}",
            "AWS::SQS::Queue": f"arn:{p}:sqs:{r}:{a}:{name}",
            "AWS::S3::Bucket": f"arn:{p}:s3:::{name}",
            "AWS::IAM::Role": f"arn:{p}:iam::{a}:role/{name}",
            "AWS::IAM::ManagedPolicy": f"arn:{p}:iam::{a}:policy/{name}",
            "AWS::KMS::Key": f"arn:{p}:kms:{r}:{a}:key/{self._kms_id(logical_id)}",
            "AWS::Glue::Job": f"arn:{p}:glue:{r}:{a}:job/{name}",
            "AWS::Logs::LogGroup": f"arn:{p}:logs:{r}:{a}:log-group:{name}:*",
            "AWS::StepFunctions::StateMachine": f"arn:{p}:states:{r}:{a}:stateMachine:{name}",
            "AWS::SageMaker::ModelPackageGroup": f"arn:{p}:sagemaker:{r}:{a}:"
            f"model-package-group/{name}",
            "AWS::SageMaker::Endpoint": f"arn:{p}:sagemaker:{r}:{a}:endpoint/{name}",
            "AWS::SageMaker::EndpointConfig": f"arn:{p}:sagemaker:{r}:{a}:endpoint-config/{name}",
            "AWS::SageMaker::Model": f"arn:{p}:sagemaker:{r}:{a}:model/{name}",
            "AWS::SageMaker::MlflowTrackingServer": f"arn:{p}:sagemaker:{r}:{a}:"
            f"mlflow-tracking-server/{name}",
            "AWS::Events::Rule": f"arn:{p}:events:{r}:{a}:rule/{name}",
            "AWS::Lambda::LayerVersion": f"arn:{p}:lambda:{r}:{a}:layer:{name}:1",
            "AWS::CloudWatch::Alarm": f"arn:{p}:cloudwatch:{r}:{a}:alarm:{name}",
        }
        if rtype in arns:
            return arns[rtype]
        service = rtype.split("::")[1].lower() if rtype.count("::") == 2 else "local"
        kind = rtype.rsplit("::", 1)[-1].lower()
        return f"arn:{p}:{service}:{r}:{a}:{kind}/{name}"

    def _kms_id(self, logical_id: str) -> str:
        h = _digest(f"{self.stack_name}/{logical_id}", 32)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    def ref(self, logical_id: str) -> Any:
        token = f"Ref {logical_id}"
        if logical_id in self.overrides:
            return self.overrides[logical_id]
        pseudo = self._pseudo(logical_id)
        if pseudo != "\0missing":
            return pseudo
        if logical_id in self.parameters:
            param = self.parameters[logical_id]
            if "Default" not in param:
                raise UnresolvedTokenError(f"{token}: parameter without a default")
            return param["Default"]
        rtype = self._resource(logical_id, token).get("Type", "")
        if rtype in _REF_IS_ARN:
            return self._arn(logical_id, rtype)
        if rtype == "AWS::KMS::Key":
            return self._kms_id(logical_id)
        if rtype in _EC2_ID_PREFIX:
            return f"{_EC2_ID_PREFIX[rtype]}-{_digest(self.stack_name + logical_id)}"
        return self.physical_name(logical_id)

    def get_att(self, logical_id: str, attr: str) -> Any:
        key = f"{logical_id}.{attr}"
        if key in self.overrides:
            return self.overrides[key]
        rtype = self._resource(logical_id, f"Fn::GetAtt {key}").get("Type", "")
        name = self.physical_name(logical_id)
        if attr == "Arn" or (attr.endswith("Arn") and attr[:-3] in rtype):
            return self._arn(logical_id, rtype)
        specific = {
            ("AWS::SNS::Topic", "TopicName"): name,
            ("AWS::S3::Bucket", "DomainName"): f"{name}.s3.amazonaws.com",
            ("AWS::S3::Bucket", "RegionalDomainName"): f"{name}.s3.{self.region}.amazonaws.com",
            ("AWS::KMS::Key", "KeyId"): self._kms_id(logical_id),
            ("AWS::IAM::Role", "RoleId"): f"AROA{_digest(logical_id, 17).upper()}",
        }
        if (rtype, attr) in specific:
            return specific[(rtype, attr)]
        if rtype in _EC2_ID_PREFIX and attr.endswith("Id"):
            return self.ref(logical_id)
        if attr.endswith("Name"):
            return name
        if attr.endswith("Arn"):
            return self._arn(logical_id, rtype)
        raise UnresolvedTokenError(
            f"Fn::GetAtt {key} ({rtype}): no local value; pass it in overrides as {key!r}"
        )

    # -- intrinsic functions -----------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """`value` with every intrinsic function evaluated."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((fn, arg),) = value.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                logical, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical, attr)
            if fn == "Fn::Join":
                sep, parts = arg
                return str(sep).join(_text(self.resolve(p)) for p in self.resolve(parts))
            if fn == "Fn::Sub":
                return self.sub(arg)
            if fn == "Fn::ImportValue":
                name = self.resolve(arg)
                if self._import_value is None:
                    raise UnresolvedTokenError(f"Fn::ImportValue {name!r}: no other stacks known")
                return self._import_value(name)
            if fn == "Fn::Select":
                index, items = self.resolve(arg)
                return items[int(index)]
            if fn == "Fn::Split":
                sep, text = self.resolve(arg)
                return str(text).split(sep)
            if fn.startswith("Fn::") or fn == "Condition":
                raise UnresolvedTokenError(f"intrinsic function {fn} is not supported locally")
        return {k: self.resolve(v) for k, v in value.items()}

    def sub(self, arg: Any) -> str:
        """Fn::Sub (a template string, or [template, variables])."""
        if isinstance(arg, list):
            template, variables = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        else:
            template, variables = arg, {}

        def repl(m: re.Match[str]) -> str:
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return _text(variables[inner])
            if "." in inner and not inner.startswith("AWS::"):
                logical, attr = inner.split(".", 1)
                return _text(self.get_att(logical, attr))
            return _text(self.ref(inner))

        return re.sub(r"\$\{([^}]+)\}", repl, template)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        raise UnresolvedTokenError(f"cannot join non-string value {value!r}")
    if isinstance(value, int | float):
        return str(value)
    raise UnresolvedTokenError(f"cannot join non-string value {value!r}")


def _json_escape(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _definition_text(value: Any, resolver: TemplateResolver) -> str:
    """The DefinitionString as JSON text: token values are escaped as JSON string content."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"Fn::Join"}:
        sep, parts = value["Fn::Join"]
        out = []
        for part in parts:
            out.append(
                part if isinstance(part, str) else _json_escape(_text(resolver.resolve(part)))
            )
        return sep.join(out)
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        arg = value["Fn::Sub"]
        template, variables = (arg[0], arg[1]) if isinstance(arg, list) else (arg, {})

        def repl(m: re.Match[str]) -> str:
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return _json_escape(_text(resolver.resolve(variables[inner])))
            return _json_escape(resolver.sub("${" + inner + "}"))

        return re.sub(r"\$\{([^}]+)\}", repl, template)
    raise UnresolvedTokenError(f"unsupported DefinitionString shape: {sorted(value)}")


def resolve_definition(
    state_machine: Mapping[str, Any],
    resolver: TemplateResolver | Mapping[str, Any] | None = None,
    *,
    template: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The plain ASL definition of a synthesized ``AWS::StepFunctions::StateMachine``.

    `state_machine` is the resource (or its ``Properties``). `resolver` resolves the tokens:
    a `TemplateResolver`, or a plain mapping of overrides (``"LogicalId"`` for ``Ref``,
    ``"LogicalId.Attr"`` for ``Fn::GetAtt``, ``"AWS::Region"`` ...) applied over the defaults
    of `template` (the stack template the resource comes from).
    """
    props = state_machine.get("Properties", state_machine)
    if not isinstance(resolver, TemplateResolver):
        resolver = TemplateResolver(template or {"Resources": {}}, overrides=resolver or {})
    if "DefinitionS3Location" in props:
        raise UnresolvedTokenError("DefinitionS3Location is not supported locally")
    if "DefinitionString" in props:
        text = _definition_text(props["DefinitionString"], resolver)
        subs = props.get("DefinitionSubstitutions") or {}
        for key, val in subs.items():
            text = text.replace("${" + key + "}", _json_escape(_text(resolver.resolve(val))))
        try:
            definition = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UnresolvedTokenError(f"resolved definition is not JSON: {exc}") from None
    elif "Definition" in props:
        definition = resolver.resolve(props["Definition"])
    else:
        raise UnresolvedTokenError("the state machine has no definition")
    if not isinstance(definition, dict):
        raise UnresolvedTokenError("the resolved definition is not a JSON object")
    return definition


# --------------------------------------------------------------------------------------------
# Cloud assembly
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateMachineInfo:
    stack: str
    logical_id: str
    name: str
    arn: str
    role_arn: str | None
    definition: dict[str, Any]


@dataclass(frozen=True)
class LambdaFunctionInfo:
    stack: str
    logical_id: str
    function_name: str
    arn: str
    handler: str  # "module.function"
    runtime: str | None
    environment: dict[str, str]
    asset_path: Path | None  # the staged code in cdk.out (a directory or .zip), when known
    properties: dict[str, Any] = field(repr=False, default_factory=dict)


class CloudAssembly:
    """The stack templates of one synthesized app, with cross-stack imports resolved.

    `overrides` maps a stack name to its `TemplateResolver` overrides (physical names the local
    run chose, e.g. the emulator's lake bucket for the lake's logical id).
    """

    def __init__(
        self,
        templates: Mapping[str, Mapping[str, Any]],
        *,
        region: str = DEFAULT_REGION,
        account: str = DEFAULT_ACCOUNT,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        outdir: Path | None = None,
    ) -> None:
        self.templates = dict(templates)
        self.region = region
        self.account = account
        self.outdir = outdir
        self._overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self._resolvers: dict[str, TemplateResolver] = {}
        self._exports: dict[str, tuple[str, Any]] | None = None
        self._importing: set[str] = set()

    @classmethod
    def from_directory(cls, outdir: str | Path, **kwargs: Any) -> CloudAssembly:
        outdir = Path(outdir)
        templates = {
            p.name.removesuffix(".template.json"): json.loads(p.read_text())
            for p in sorted(outdir.glob("*.template.json"))
        }
        if not templates:
            raise FileNotFoundError(f"no *.template.json in {outdir}: run `cdk synth` first")
        return cls(templates, outdir=outdir, **kwargs)

    def set_overrides(self, stack: str, overrides: Mapping[str, Any]) -> None:
        self._overrides.setdefault(self._stack(stack), {}).update(overrides)
        self._resolvers.clear()
        self._exports = None

    def _stack(self, hint: str) -> str:
        if hint in self.templates:
            return hint
        matches = [s for s in self.templates if s.endswith(hint) or hint in s]
        if len(matches) != 1:
            raise KeyError(f"stack {hint!r}: matches {matches or 'none'} of {list(self.templates)}")
        return matches[0]

    def resolver(self, stack: str) -> TemplateResolver:
        stack = self._stack(stack)
        if stack not in self._resolvers:
            self._resolvers[stack] = TemplateResolver(
                self.templates[stack],
                stack_name=stack,
                region=self.region,
                account=self.account,
                overrides=self._overrides.get(stack),
                import_value=self.import_value,
            )
        return self._resolvers[stack]

    def import_value(self, name: str) -> Any:
        if self._exports is None:
            self._exports = {}
            for stack, tpl in self.templates.items():
                for out in (tpl.get("Outputs") or {}).values():
                    export = (out.get("Export") or {}).get("Name")
                    if export is not None:
                        resolved = TemplateResolver(tpl, stack_name=stack).resolve(export)
                        self._exports[str(resolved)] = (stack, out["Value"])
        if name not in self._exports:
            raise UnresolvedTokenError(f"Fn::ImportValue {name!r}: no stack exports it")
        if name in self._importing:
            raise UnresolvedTokenError(f"Fn::ImportValue {name!r}: circular import")
        stack, value = self._exports[name]
        self._importing.add(name)
        try:
            return self.resolver(stack).resolve(value)
        finally:
            self._importing.discard(name)

    def find_resource(self, stack: str, rtype: str, id_prefix: str = "") -> str:
        """Logical id of the one `rtype` resource of `stack` whose id is `id_prefix` + hash."""
        stack = self._stack(stack)
        pattern = re.compile(re.escape(id_prefix) + r"[0-9A-F]{8}$") if id_prefix else None
        ids = [
            k
            for k, v in self.templates[stack].get("Resources", {}).items()
            if v.get("Type") == rtype and (pattern is None or pattern.match(k) or k == id_prefix)
        ]
        if len(ids) != 1:
            raise KeyError(f"{rtype} {id_prefix!r} in {stack}: found {ids or 'none'}")
        return ids[0]

    def state_machines(self) -> list[StateMachineInfo]:
        out = []
        for stack, tpl in self.templates.items():
            for logical, res in (tpl.get("Resources") or {}).items():
                if res.get("Type") != "AWS::StepFunctions::StateMachine":
                    continue
                r = self.resolver(stack)
                role = res.get("Properties", {}).get("RoleArn")
                out.append(
                    StateMachineInfo(
                        stack=stack,
                        logical_id=logical,
                        name=r.physical_name(logical),
                        arn=r.ref(logical),
                        role_arn=None if role is None else str(r.resolve(role)),
                        definition=resolve_definition(res, r),
                    )
                )
        return out

    def state_machine(self, stack: str, logical_prefix: str = "") -> StateMachineInfo:
        """The state machine of `stack` (a stack name or a suffix like ``"Training"``)."""
        stack = self._stack(stack)
        logical = self.find_resource(stack, "AWS::StepFunctions::StateMachine", logical_prefix)
        r = self.resolver(stack)
        res = self.templates[stack]["Resources"][logical]
        role = res.get("Properties", {}).get("RoleArn")
        return StateMachineInfo(
            stack=stack,
            logical_id=logical,
            name=r.physical_name(logical),
            arn=r.ref(logical),
            role_arn=None if role is None else str(r.resolve(role)),
            definition=resolve_definition(res, r),
        )

    def _asset_source(self, stack: str, code: Any) -> str | None:
        """The staged source (``asset.<hash>``) of a Lambda's ``Code``, from ``*.assets.json``."""
        if self.outdir is None or not isinstance(code, dict):
            return None
        key = code.get("S3Key")
        manifest = self.outdir / f"{stack}.assets.json"
        if not isinstance(key, str) or not manifest.is_file():
            return None
        files = json.loads(manifest.read_text()).get("files", {})
        entry = files.get(key.split(".", 1)[0])
        return None if entry is None else entry.get("source", {}).get("path")

    def lambda_functions(self, stack: str | None = None) -> list[LambdaFunctionInfo]:
        stacks = [self._stack(stack)] if stack else list(self.templates)
        out = []
        for s in stacks:
            r = self.resolver(s)
            for logical, res in (self.templates[s].get("Resources") or {}).items():
                if res.get("Type") != "AWS::Lambda::Function":
                    continue
                props = res.get("Properties", {}) or {}
                env = (props.get("Environment") or {}).get("Variables") or {}
                asset = (res.get("Metadata") or {}).get("aws:asset:path") or self._asset_source(
                    s, props.get("Code")
                )
                out.append(
                    LambdaFunctionInfo(
                        stack=s,
                        logical_id=logical,
                        function_name=r.physical_name(logical),
                        arn=r.get_att(logical, "Arn"),
                        handler=str(props.get("Handler", "")),
                        runtime=props.get("Runtime"),
                        environment={k: _text(r.resolve(v)) for k, v in env.items()},
                        asset_path=(self.outdir / asset) if asset and self.outdir else None,
                        properties=props,
                    )
                )
        return out


def synthesize_app(
    stage: str = "dev",
    outdir: str | Path | None = None,
    *,
    repo_root: str | Path | None = None,
    context: Mapping[str, Any] | None = None,
    **assembly_kwargs: Any,
) -> CloudAssembly:
    """Synthesize the CDK app of `repo_root` for `stage` (as ``cdk synth`` does) and load it.

    Needs the ``infra`` extra (aws-cdk-lib) and Node.js; ``stacks`` is imported from
    `repo_root` (default: the checkout this package lives in).
    """
    import os
    import tempfile

    root = Path(repo_root) if repo_root else Path(__file__).resolve().parents[1]
    if not (root / "stacks" / "stage.py").is_file():
        raise FileNotFoundError(f"{root} has no stacks/stage.py: pass repo_root=<checkout>")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from aws_cdk import App

    from stacks.stage import build_app, cdk_json_context

    out = Path(outdir) if outdir else Path(tempfile.mkdtemp(prefix=f"cdk-out-{stage}-"))
    app = App(context={**cdk_json_context(), **(context or {}), "stage": stage}, outdir=str(out))
    build_app(app)
    app.synth()
    return CloudAssembly.from_directory(out, **assembly_kwargs)
