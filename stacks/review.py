"""Review stack: the validation team's workbench in AWS (docs/review.md, "Deployment").

- ``ReviewQueue``: the DynamoDB table of `clinical_ner.pipeline.review_queue` (partition key
  ``pk``; sparse GSI ``by_risk`` on ``queue`` / ``risk``, all attributes projected), on demand,
  encrypted with the stack's customer-managed key, point-in-time recovery on.
- ``ReviewApi`` Lambda (``lambdas/review_api``): the core WSGI app behind API Gateway, in the
  stage VPC (it reads note text: PHI), with the AWS SDK for pandas layer because the
  ``reviews`` Parquet writer and the curated-notes reader need pyarrow (the core layer is pure
  Python). It may read curated notes and ``reviews/``, write ``reviews/``,
  ``raw/annotations/reviewed/`` and ``raw/validated_eval/``, use the queue table, publish its
  KPI metrics, and invoke the retraining trigger asynchronously.
- HTTP API: ``GET /`` and ``GET /static/{proxy+}`` (the page, no data) are public; every
  ``/api/`` route needs a Cognito JWT (the authorizer checks issuer, audience and expiry; the
  app checks the ``reviewers`` group). Access logs go to a KMS-encrypted log group with the
  request's metadata only (`ACCESS_LOG_FORMAT`: no body, no path, no query string); the stage
  is throttled.
- Cognito: no self sign-up (an administrator creates reviewers and adds them to
  ``reviewers``), MFA required (TOTP only), a strong password policy, the Plus feature plan
  with threat protection enforced, and one public app client for the workbench
  (authorization code grant, PKCE, callback = the API's own URL).

The Glue table ``reviews`` and its Athena queries are in the analytics stack; the
precision/recall alarms and the KPI dashboard row in the monitoring stack.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from clinical_ner.pipeline.monitoring import NAMESPACE
from clinical_ner.pipeline.review_queue import GSI_NAME
from clinical_ner.pipeline.stage_config import StageConfig
from stacks.checks import acknowledge
from stacks.common import (
    LambdaNetwork,
    encrypted_log_group,
    pandas_layer,
    pipeline_function,
    stage_key,
)
from stacks.data_lake import DataLakeStack
from stacks.naming import resource_name, review_names
from stacks.retention import removal_policy
from stacks.training import TrainingStack

REVIEWERS_GROUP = "reviewers"  # `review_app.ReviewApp.required_group`
# The HTTP API's access log line: the default fields, never a body (HTTP APIs cannot log one),
# the path or the query string (a task id names a note's hash; the route key is enough).
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
}
# A team of reviewers makes a few requests per note; these leave room for bursts while a
# runaway client (or a credential in the wrong hands) cannot page through the queue quickly.
THROTTLE_RATE_PER_SECOND = 10
THROTTLE_BURST = 20
FUNCTION_CONCURRENCY = 10
API_TIMEOUT = Duration.seconds(29)  # HTTP API integrations end at 30 s
PUBLIC_ROUTES = ("GET /", "GET /static/{proxy+}")
TOKEN_VALIDITY = Duration.hours(1)
REFRESH_VALIDITY = Duration.hours(8)  # one working day, then sign in (with MFA) again


class ReviewStack(Stack):
    """Exposes `table`, `key`, `function`, `policy`, `api`, `user_pool`, `client`, `names`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        data_lake: DataLakeStack,
        training: TrainingStack,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.data_lake = data_lake
        self.names = review_names(config.resource_prefix)
        self.key = stage_key(
            self,
            "ReviewKey",
            config=config,
            alias=f"alias/{config.resource_prefix}-review",
            description=f"Clinical NER {config.stage.value}: review queue table and API logs",
            cloudwatch_logs=True,
        )
        self.table = self._table()
        self.function, self.policy = self._function(training)
        self.user_pool, self.domain = self._user_pool()
        self.api = apigw.HttpApi(
            self,
            "Api",
            api_name=self.names["api"],
            description="Clinical NER review workbench (page + JSON API)",
            create_default_stage=False,
        )
        self.client = self._app_client()
        self._sign_in_settings()
        self._routes()
        self.stage = self._stage()
        CfnOutput(self, "WorkbenchUrl", value=f"{self.api.api_endpoint}/")
        CfnOutput(self, "UserPoolId", value=self.user_pool.user_pool_id)
        CfnOutput(self, "WorkbenchClientId", value=self.client.user_pool_client_id)
        CfnOutput(self, "SignInDomain", value=self.domain.base_url())

    # ------------------------------------------------------------------ data

    def _table(self) -> dynamodb.Table:
        """The queue's keys exactly as `review_queue.create_table` makes them locally."""
        table = dynamodb.Table(
            self,
            "ReviewQueue",
            table_name=self.names["table"],
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=self.config.retention.retain_on_delete,
            removal_policy=removal_policy(self.config),
        )
        table.add_global_secondary_index(
            index_name=GSI_NAME,
            partition_key=dynamodb.Attribute(name="queue", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="risk", type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.ALL,
        )
        acknowledge(
            table,
            "HIPAA.Security-DynamoDBInBackupPlan",
            "Point-in-time recovery restores the queue to any second of the last 35 days; "
            "what the queue produces (reviews Parquet, reviewed annotations) lives in the "
            "versioned lake bucket, and the queue itself is rebuilt by re-enqueueing the "
            "extraction, so a separate AWS Backup plan would add cost without a recovery it "
            "does not already have.",
        )
        return table

    def _function(self, training: TrainingStack) -> tuple[lambda_.Function, iam.ManagedPolicy]:
        lake, data_lake = self.config.lake, self.data_lake
        fn_name = self.names["function"]
        # By its fixed name (no cross-stack export): the monitoring stack can replace the
        # function without being blocked by an import here.
        retraining_name = resource_name(self.config, "retraining_trigger")
        retraining_arn = (
            f"arn:{self.partition}:lambda:{self.region}:{self.account}:function:{retraining_name}"
        )
        reads = (lake.curated_notes, lake.reviews)
        writes = (lake.reviews, lake.reviewed_annotations, lake.validated_eval)
        fn, policy = pipeline_function(
            self,
            "ReviewApi",
            config=self.config,
            function_name=fn_name,
            code_dir="review_api",
            description="Review workbench API (thin handler over clinical_ner.runtime.review_app)",
            role_description=f"Lambda {fn_name}: the review queue, note text, reviews, metrics",
            statements=[
                iam.PolicyStatement(
                    sid="ReviewQueue",
                    actions=[
                        "dynamodb:GetItem",
                        "dynamodb:UpdateItem",
                        "dynamodb:Query",
                        "dynamodb:ConditionCheckItem",
                    ],
                    resources=[
                        self.table.table_arn,
                        f"{self.table.table_arn}/index/{GSI_NAME}",
                    ],
                ),
                iam.PolicyStatement(
                    sid="UseQueueKey",
                    actions=[
                        "kms:Decrypt",
                        "kms:Encrypt",
                        "kms:GenerateDataKey",
                        "kms:DescribeKey",
                    ],
                    resources=[self.key.key_arn],
                ),
                iam.PolicyStatement(
                    sid="ListReviewPrefixes",
                    actions=["s3:ListBucket"],
                    resources=[data_lake.lake_arn_ref()],
                    conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in reads]}},
                ),
                iam.PolicyStatement(
                    sid="ReadNotesAndReviews",
                    actions=["s3:GetObject"],
                    resources=[data_lake.lake_object_arn(p) for p in reads],
                ),
                iam.PolicyStatement(
                    sid="WriteReviews",
                    actions=["s3:PutObject"],
                    resources=[data_lake.lake_object_arn(p) for p in writes],
                ),
                iam.PolicyStatement(
                    sid="UseLakeKey",
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=[data_lake.key.key_arn],
                ),
                iam.PolicyStatement(
                    sid="PublishReviewMetrics",
                    actions=["cloudwatch:PutMetricData"],
                    resources=["*"],
                    conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
                ),
                iam.PolicyStatement(
                    sid="StartRetraining",
                    actions=["lambda:InvokeFunction"],
                    resources=[retraining_arn],
                ),
            ],
            environment={
                "STAGE_CONFIG": self.config.to_json(),
                "STAGE": self.config.stage.value,
                "LAKE_BUCKET": data_lake.lake.bucket_name,
                "REVIEW_TABLE": self.table.table_name,
                "RETRAINING_FUNCTION_NAME": retraining_name,
                "SIGN_IN_PARAMETER": self.names["sign_in_parameter"],
                "LOG_LEVEL": "INFO",
            },
            log_key=self.key,
            memory_size=1024,  # a day's curated notes are read into memory to find one text
            timeout=API_TIMEOUT,
            network=LambdaNetwork(training.vpc, training.subnets, training.security_group),
            reserved_concurrency=FUNCTION_CONCURRENCY,
            extra_layers=[pandas_layer(self)],
            star_reason="A Lambda function in a VPC manages its network interfaces through EC2 "
            "actions that support no resource-level permissions; cloudwatch:PutMetricData is "
            "limited by the cloudwatch:namespace condition to the pipeline's namespace.",
            synchronous_reason="API Gateway invokes this function synchronously and answers "
            "the reviewer's browser with its result or error; a dead-letter queue only "
            "receives failed asynchronous invocations, which never happen here.",
        )
        for p in sorted({*reads, *writes}):
            data_lake.acknowledge_prefixes(
                policy,
                [p],
                f"Lambda {fn_name} reads or writes objects named per note, review or day "
                f"(note hashes, review ids, partition dates) under {p}; the wildcard covers "
                "exactly that lake prefix.",
            )
        return fn, policy

    # ------------------------------------------------------------------ identity

    def _user_pool(self) -> tuple[cognito.UserPool, cognito.UserPoolDomain]:
        pool = cognito.UserPool(
            self,
            "Reviewers",
            user_pool_name=self.names["user_pool"],
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            password_policy=cognito.PasswordPolicy(
                min_length=14,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            deletion_protection=self.config.retention.retain_on_delete,
            removal_policy=removal_policy(self.config),
        )
        cognito.CfnUserPoolGroup(
            self,
            "ReviewersGroup",
            user_pool_id=pool.user_pool_id,
            group_name=REVIEWERS_GROUP,
            description="Validation team members who may use the review workbench",
        )
        domain = pool.add_domain(
            "SignIn",
            cognito_domain=cognito.CognitoDomainOptions(
                domain_prefix=f"{self.config.resource_prefix}-review-{self.account}"
            ),
        )
        return pool, domain

    def _sign_in_settings(self) -> None:
        """The page's sign-in settings (hosted UI domain, app client id), read at cold start.

        An SSM parameter rather than environment variables: the app client's callback is the
        API's URL and the API invokes the function, so the function's environment naming the
        client would be a dependency cycle. Neither value is secret (a public PKCE client).
        """
        name = self.names["sign_in_parameter"]
        ssm.StringParameter(
            self,
            "SignInSettings",
            parameter_name=name,
            description="Review workbench sign-in: Cognito domain and public app client id",
            string_value=self.to_json_string(
                {"domain": self.domain.base_url(), "client_id": self.client.user_pool_client_id}
            ),
        )
        self.policy.add_statements(
            iam.PolicyStatement(
                sid="ReadSignInSettings",
                actions=["ssm:GetParameter"],
                resources=[
                    f"arn:{self.partition}:ssm:{self.region}:{self.account}:parameter{name}"
                ],
            )
        )

    def _app_client(self) -> cognito.UserPoolClient:
        """The workbench's public client: authorization code + PKCE, back to the API's URL."""
        url = f"{self.api.api_endpoint}/"
        return self.user_pool.add_client(
            "Workbench",
            user_pool_client_name=f"{self.names['api']}-workbench",
            generate_secret=False,  # a browser page cannot keep a secret: PKCE instead
            auth_flows=cognito.AuthFlow(),  # sign-in only through the hosted pages
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL],
                callback_urls=[url],
                logout_urls=[url],
            ),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO],
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            id_token_validity=TOKEN_VALIDITY,
            access_token_validity=TOKEN_VALIDITY,
            refresh_token_validity=REFRESH_VALIDITY,
        )

    # ------------------------------------------------------------------ API

    def _routes(self) -> None:
        integration = integrations.HttpLambdaIntegration(
            "ReviewApiIntegration",
            self.function,
            payload_format_version=apigw.PayloadFormatVersion.VERSION_2_0,
        )
        authorizer = authorizers.HttpUserPoolAuthorizer(
            "ReviewersAuthorizer",
            self.user_pool,
            user_pool_clients=[self.client],
            authorizer_name="cognito-reviewers",
        )
        self.api.add_routes(
            path="/api/{proxy+}",
            methods=[apigw.HttpMethod.ANY],
            integration=integration,
            authorizer=authorizer,
        )
        for route in PUBLIC_ROUTES:
            method, path = route.split(" ", 1)
            (public,) = self.api.add_routes(
                path=path,
                methods=[apigw.HttpMethod(method)],
                integration=integration,
                authorizer=apigw.HttpNoneAuthorizer(),
            )
            acknowledge(
                public,
                "AwsSolutions-APIG4",
                "This route serves the workbench's static page (HTML, JavaScript, CSS from the "
                "core package) that a browser loads before it has a token; it returns no note, "
                "queue or review data. Every /api/ route requires the Cognito JWT.",
            )

    def _stage(self) -> apigw.HttpStage:
        logs = encrypted_log_group(
            self, "AccessLogs", name=self.names["access_logs"], key=self.key, config=self.config
        )
        stage = apigw.HttpStage(
            self,
            "DefaultStage",
            http_api=self.api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigw.ThrottleSettings(
                rate_limit=THROTTLE_RATE_PER_SECOND, burst_limit=THROTTLE_BURST
            ),
        )
        cfn = stage.node.default_child
        assert isinstance(cfn, apigw.CfnStage)
        cfn.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=logs.log_group_arn, format=json.dumps(ACCESS_LOG_FORMAT)
        )
        return stage
