"""The root of Roost's exception tree, the tree drawn whole, and the registry of error codes.

Every error Roost raises on purpose derives from :class:`RoostError` and carries a stable
``code`` (an upper-case identifier that scripts can rely on) plus a human message that says
what was wrong. Each package defines its own subtree (``roost.recipe.errors``,
``roost.ipc.errors``, ``roost.agent.errors``, ``roost.hub.errors``, ``roost.serve.errors``,
``roost.learn.errors``);
transports map codes to HTTP statuses (:mod:`roost.hub.contract.errors`), IPC error types or CLI
exit codes at the boundary only, always chaining with ``raise ... from err``.

The three mix-ins tell a caller what to do:

* :class:`Retryable` — the same call may succeed later (a timeout, a busy resource): ``retry``.
* :class:`Reauthenticate` — the credentials were refused; get new ones before retrying: ``re-auth``.
* anything else — give up: the input or the state is wrong and retrying will not help.

The whole tree (class, its default code, its module under ``roost.``, what to do, other bases).
A class with several Roost bases is drawn under the first; ``tests/layout/test_errors.py`` checks
that every class is drawn here::

    RoostError                             ROOST_ERROR                errors
    ├── AgentError                         AGENT_ERROR                agent.errors
    │   ├── ArtifactError                  ARTIFACT_ERROR             agent.errors
    │   ├── DeploymentError                DEPLOYMENT_FAILED          agent.errors
    │   ├── InvalidTransitionError         INVALID_TRANSITION         agent.errors
    │   ├── IpcStreamLimitError            IPC_STREAM_LIMIT           agent.errors    retry
    │   └── LifecycleStepError             LIFECYCLE_STEP_FAILED      agent.errors
    ├── AgentNotRunningError               AGENT_NOT_RUNNING          cli.local
    ├── ClusterError                       CLUSTER_ERROR              cluster.errors
    │   ├── ClusterFullError               CLUSTER_FULL               cluster.errors  retry
    │   ├── KubernetesError                KUBERNETES_API_ERROR       cluster.errors
    │   │   ├── KubernetesConfigError      KUBERNETES_CONFIG_INVALID  cluster.errors           also InvalidInputError
    │   │   ├── KubernetesConflictError    KUBERNETES_CONFLICT        cluster.errors  retry    also ConflictError
    │   │   ├── KubernetesForbiddenError   KUBERNETES_FORBIDDEN       cluster.errors
    │   │   ├── KubernetesNotFoundError    KUBERNETES_NOT_FOUND       cluster.errors           also NotFoundError
    │   │   └── KubernetesUnavailableError KUBERNETES_UNAVAILABLE     cluster.errors  retry
    │   ├── NodeConflictError              NODE_CONFLICT              cluster.errors           also ConflictError
    │   ├── QuantityError                  QUANTITY_INVALID           cluster.errors           also InvalidInputError
    │   ├── ReplicaConfigError             REPLICA_CONFIG_INVALID     cluster.errors           also InvalidInputError
    │   ├── ReplicaFullError               REPLICA_FULL               cluster.errors  retry
    │   ├── ReplicaNotReadyError           REPLICA_NOT_READY          cluster.errors  retry
    │   ├── ServiceTypeInvalidError        SERVICE_TYPE_INVALID       cluster.errors           also InvalidInputError
    │   ├── ServiceTypeNotFoundError       SERVICE_TYPE_NOT_FOUND     cluster.errors           also NotFoundError
    │   ├── SessionConflictError           SESSION_ALREADY_CONNECTED  cluster.errors           also ConflictError
    │   ├── SessionLostError               SESSION_LOST               cluster.errors  retry
    │   ├── SessionNotFoundError           SESSION_NOT_FOUND          cluster.errors           also NotFoundError
    │   ├── SessionTokenError              SESSION_TOKEN_INVALID      cluster.errors           also InvalidInputError
    │   ├── StreamDataError                STREAM_DATA_INVALID        cluster.errors           also InvalidInputError
    │   ├── StreamMessageError             STREAM_MESSAGE_INVALID     cluster.errors           also InvalidInputError
    │   ├── StreamProtocolError            STREAM_PROTOCOL_ERROR      cluster.errors
    │   └── UnschedulableError             SERVICE_UNSCHEDULABLE      cluster.errors           also InvalidInputError
    ├── ConflictError                      CONFLICT                   errors
    │   ├── ComponentBusyError             COMPONENT_BUSY             agent.errors             also AgentError
    │   └── DirectChannelUnavailableError  DIRECT_CHANNEL_UNAVAILABLE agent.errors             also AgentError
    ├── DemoStepError                      DEMO_FAILED                demo.steps
    ├── InvalidInputError                  INVALID_INPUT              errors
    │   ├── PosixUserError                 POSIX_USER_INVALID         agent.errors             also AgentError
    │   ├── RecipeError                    RECIPE_INVALID             recipe.errors
    │   │   └── DependencyError            DEPENDENCY_CONFLICT        recipe.errors
    │   └── RequestError                   INVALID_REQUEST            serve.errors             also ServeError
    ├── NotFoundError                      NOT_FOUND                  errors
    │   └── ComponentNotFoundError         COMPONENT_NOT_FOUND        agent.errors             also AgentError
    ├── OperationTimeoutError              TIMEOUT                    errors          retry
    │   ├── LifecycleTimeoutError          LIFECYCLE_TIMEOUT          agent.errors    retry    also AgentError
    │   └── HubTimeoutError                HUB_TIMEOUT                hub.client      retry    also HubError
    ├── UnauthorizedError                  UNAUTHORIZED               errors          re-auth
    │   ├── IpcNotAuthenticatedError       IPC_NOT_AUTHENTICATED      agent.errors    re-auth  also AgentError
    │   └── PolicyChangeRefusedError       POLICY_CHANGE_REFUSED      agent.errors    re-auth  also AgentError
    ├── HubError                           HUB_ERROR                  hub.errors
    │   ├── DigestMismatchError            ARTIFACT_DIGEST_MISMATCH   hub.client
    │   ├── HubProtocolError               HUB_PROTOCOL_ERROR         hub.client
    │   ├── HubUnreachableError            HUB_UNREACHABLE            hub.client      retry
    │   ├── AuthenticationError            UNAUTHORIZED               hub.errors      re-auth  also UnauthorizedError
    │   ├── ForbiddenError                 FORBIDDEN                  hub.errors      re-auth  also UnauthorizedError
    │   │   └── ReportForbiddenError       DEPLOYMENT_NOT_FOR_DEVICE  hub.errors      re-auth
    │   ├── GoneError                      GONE                       hub.errors               also ConflictError
    │   ├── HubConflictError               CONFLICT                   hub.errors               also ConflictError
    │   │   └── RevisionNotGivenError      REVISION_NOT_GIVEN         hub.errors
    │   ├── HubInvalidInputError           INVALID_INPUT              hub.errors               also InvalidInputError
    │   │   └── InvalidNameError           INVALID_NAME               hub.errors
    │   ├── HubNotFoundError               NOT_FOUND                  hub.errors               also NotFoundError
    │   ├── HubServerError                 HUB_SERVER_ERROR           hub.errors      retry
    │   ├── PayloadTooLargeError           PAYLOAD_TOO_LARGE          hub.errors               also InvalidInputError
    │   └── UnprocessableError             UNPROCESSABLE              hub.errors               also InvalidInputError
    │       └── DesiredStateConflictError  DESIRED_STATE_CONFLICT     hub.errors
    ├── IpcError                           IPC_ERROR                  ipc.errors
    │   ├── ConnectionRefusedByServer      CONNECT_REJECTED           ipc.errors      re-auth
    │   ├── FrameError                     FRAME_INVALID              ipc.errors
    │   │   ├── FrameCrcError              FRAME_CRC                  ipc.errors
    │   │   ├── FrameTooLargeError         FRAME_TOO_LARGE            ipc.errors
    │   │   └── FrameTruncatedError        FRAME_TRUNCATED            ipc.errors
    │   ├── IpcConnectionClosedError       CONNECTION_CLOSED          ipc.errors      retry
    │   │   └── AgentBusyError             IPC_BUSY                   ipc.errors      retry
    │   ├── IpcTimeoutError                IPC_TIMEOUT                ipc.errors      retry
    │   ├── ProtocolError                  PROTOCOL_ERROR             ipc.errors
    │   └── ServiceErrorResponse           SERVICE_ERROR_RESPONSE     ipc.errors
    │       ├── ConflictIpcError           CONFLICT                   ipc.errors
    │       ├── InvalidArgumentsIpcError   INVALID_INPUT              ipc.errors
    │       ├── ResourceNotFoundIpcError   NOT_FOUND                  ipc.errors
    │       ├── ServiceIpcError            SERVICE_ERROR              ipc.errors
    │       └── UnauthorizedIpcError       UNAUTHORIZED               ipc.errors
    ├── LearnError                         LEARN_ERROR                learn.errors
    │   ├── CentreUnreachableError         CENTRE_UNREACHABLE         learn.errors    retry
    │   ├── FeatureMismatchError           FEATURES_MISMATCH          learn.errors             also InvalidInputError
    │   ├── FederatedError                 LEARN_JOB_FAILED           learn.errors
    │   │   ├── DataMissingError           LEARN_DATA_MISSING         learn.errors             also NotFoundError
    │   │   ├── FlowerMissingError         LEARN_FLOWER_MISSING       learn.errors             also NotFoundError
    │   │   ├── FlowerProcessError         LEARN_FLOWER_FAILED        learn.errors
    │   │   ├── JobModelInvalidError       LEARN_MODEL_INVALID        learn.errors
    │   │   ├── JobModelMissingError       LEARN_MODEL_MISSING        learn.errors             also NotFoundError
    │   │   ├── JobStateError              LEARN_JOB_STATE            learn.errors             also ConflictError
    │   │   ├── JoinTimeoutError           LEARN_JOIN_TIMEOUT         learn.errors
    │   │   ├── ParticipantsInvalidError   LEARN_PARTICIPANTS_INVALID learn.errors             also InvalidInputError
    │   │   ├── RoundsOutOfRangeError      LEARN_ROUNDS_OUT_OF_RANGE  learn.errors             also InvalidInputError
    │   │   ├── ServingComponentError      LEARN_COMPONENT_UNKNOWN    learn.errors             also InvalidInputError
    │   │   ├── StrategyUnknownError       LEARN_STRATEGY_UNKNOWN     learn.errors             also InvalidInputError
    │   │   ├── TargetEmptyError           LEARN_TARGET_EMPTY         learn.errors             also InvalidInputError
    │   │   ├── TaskUnknownError           LEARN_TASK_UNKNOWN         learn.errors             also InvalidInputError
    │   │   ├── TooFewParticipantsError    LEARN_TOO_FEW_PARTICIPANTS learn.errors
    │   │   └── UpdateRejectedError        LEARN_UPDATE_REJECTED      learn.errors
    │   ├── FilterError                    FILTER_UNKNOWN             learn.errors             also InvalidInputError
    │   ├── GateFailedError                GATE_FAILED                learn.errors             also ConflictError
    │   ├── LighteningError                LIGHTEN_FAILED             learn.errors
    │   ├── ModelLoadError                 MODEL_UNREADABLE           learn.errors             also InvalidInputError
    │   ├── ModelMissingError              MODEL_MISSING              learn.errors             also NotFoundError
    │   ├── NotApplicableError             LIGHTEN_NOT_APPLICABLE     learn.errors             also InvalidInputError
    │   ├── OutputExistsError              LIGHTEN_OUTPUT_EXISTS      learn.errors             also ConflictError
    │   ├── ReplicasExhaustedError         PARALLEL_REPLICAS_LOST     learn.errors    retry
    │   ├── ValidationDataError            VALIDATION_DATA_INVALID    learn.errors             also InvalidInputError
    │   └── VariantError                   VARIANT_INVALID            learn.errors             also InvalidInputError
    ├── ProvisionError                     PROVISION_FAILED           provision.errors
    │   ├── BecomeError                    BECOME_FAILED              provision.errors re-auth also UnauthorizedError
    │   ├── DistNotFoundError              DIST_NOT_FOUND             provision.errors         also NotFoundError
    │   ├── HostKeyError                   HOST_KEY_MISMATCH          provision.errors         also ConflictError
    │   ├── ProvisionStepError             PROVISION_STEP_FAILED      provision.errors
    │   ├── ServiceUnitError               SERVICE_UNIT_FAILED        provision.errors
    │   ├── SshAuthError                   SSH_AUTH_REFUSED           provision.errors re-auth also UnauthorizedError
    │   ├── SshTargetError                 SSH_TARGET_INVALID         provision.errors         also InvalidInputError
    │   └── SshUnreachableError            SSH_UNREACHABLE            provision.errors retry
    ├── SealError                          SECRET_UNSEAL_FAILED       sealed
    └── ServeError                         SERVE_ERROR                serve.errors
        ├── BatcherClosedError             BATCHER_CLOSED             serve.batching
        └── ModelError                     MODEL_ERROR                serve.errors

Codes are also raised on these classes with a more specific ``code=`` (``HubNotFoundError(...,
code="DEVICE_NOT_FOUND")``). Every code is registered in :data:`CODES` with its meaning, and
listed in ``docs/errors.md``; a test checks that every code raised in ``src/`` is in both.
"""

from __future__ import annotations


class RoostError(Exception):
    """Base class. ``code`` is stable; ``str(err)`` is the message for people."""

    code: str = "ROOST_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class Retryable:
    """Mix-in: the operation may succeed if retried later."""

    retryable = True


class Reauthenticate:
    """Mix-in: credentials were refused; obtain new ones, then retry."""

    reauthenticate = True


class InvalidInputError(RoostError):
    """The caller sent something malformed; fix the input."""

    code = "INVALID_INPUT"


class NotFoundError(RoostError):
    """A named thing (component, deployment, file) does not exist."""

    code = "NOT_FOUND"


class ConflictError(RoostError):
    """The request conflicts with the current state (already running, busy, ...)."""

    code = "CONFLICT"


class UnauthorizedError(Reauthenticate, RoostError):
    """The principal is not allowed to do this."""

    code = "UNAUTHORIZED"


class OperationTimeoutError(Retryable, RoostError):
    """A step did not finish within its timeout."""

    code = "TIMEOUT"


# -- the registry of codes ------------------------------------------------------------------------
#: Every error code Roost raises or answers with, and what it means, grouped by the package that
#: raises it. ``docs/errors.md`` lists the same (tests/layout/test_errors.py keeps them in step).
CODES: dict[str, dict[str, str]] = {
    "roost.errors (the root: kinds every package uses)": {
        "ROOST_ERROR": "Base code of an error no more specific class describes.",
        "INVALID_INPUT": "The caller sent something malformed; fix the input (exit code 3).",
        "NOT_FOUND": "A named thing does not exist (exit code 4).",
        "CONFLICT": "The request conflicts with the current state (exit code 7).",
        "UNAUTHORIZED": "The credentials were refused or the principal may not do this; re-authenticate (exit code 8).",
        "TIMEOUT": "A step did not finish within its timeout; retry later (exit code 6).",
        "EXTRA_NOT_INSTALLED": "The command needs a module only Roost's hub extra installs: pip install 'roost[hub]'.",
        "INVALID_PATH": "A path segment would escape its folder ('/', '..', NUL), or an artifact path (lib/a.py) has "
                        "a bad segment or collides with another; use plain names.",
        "INVALID_ARGUMENT": "A command-line or request argument is malformed (KEY=VALUE, NAME=VERSION, JSON, ...).",
        "INVALID_REQUEST": "A request lacks a required field or has one of the wrong type.",
    },
    "roost.recipe": {
        "RECIPE_INVALID": "A recipe is malformed or breaks the Greengrass recipe format; the message names the field.",
        "DEPENDENCY_CONFLICT": "Two components require versions of a dependency that no single version satisfies.",
        "DEPENDENCY_CYCLE": "Component dependencies form a cycle.",
        "DEPENDENCY_MISSING": "A dependency (HARD or SOFT) has no available version matching its range.",
        "BUILTIN_VERSION_MISMATCH": "A range excludes the version of an AWS-provided component Roost builds in.",
        "AWS_COMPONENT_UNAVAILABLE": "An aws.greengrass.* catalogue component Roost does not provide; publish a "
                                     "replacement under its name.",
        "PLATFORM_UNSUPPORTED": "No manifest of the recipe matches this device's platform.",
    },
    "roost.ipc (the components' client and the wire codec)": {
        "IPC_ERROR": "Base code of a local IPC failure.",
        "IPC_NOT_CONFIGURED": "No IPC socket path or auth token (the AWS_GG_NUCLEUS_* / SVCUID variables are unset).",
        "IPC_TIMEOUT": "The agent did not answer an IPC call in time; retry.",
        "IPC_BUSY": "The agent refused the connection: its connection cap is reached; retry later.",
        "CONNECTION_CLOSED": "The IPC connection closed; reconnect and retry.",
        "CONNECT_REJECTED": "The agent rejected CONNECT: unknown or stale SVCUID.",
        "PROTOCOL_ERROR": "The peer broke the event-stream RPC protocol.",
        "FRAME_INVALID": "An event-stream frame is malformed.",
        "FRAME_CRC": "An event-stream frame's CRC32 does not match.",
        "FRAME_TOO_LARGE": "An event-stream frame is larger than the limit.",
        "FRAME_TRUNCATED": "An event-stream frame ended before its declared length.",
        "NOT_A_REQUEST": "A message answered as a request has no replyTo/correlationId.",
        "SERVICE_ERROR_RESPONSE": "The agent answered an IPC call with an error (Greengrass ServiceError family).",
        "SERVICE_ERROR": "The agent failed to carry out an IPC operation (ServiceError).",
    },
    "roost.agent": {
        "AGENT_ERROR": "Base code of a device agent failure.",
        "AGENT_ALREADY_RUNNING": "An agent already runs on this root (exit code 7).",
        "AGENT_NOT_RUNNING": "No agent runs on this root, or its socket does not answer (exit code 5).",
        "NODE_SETTINGS_INVALID": "ROOT/node.json (the cluster-node options of roost agent start) is unreadable.",
        "AGENT_ROOT_UNREACHABLE": "Component users cannot reach the agent root (a parent folder is not searchable).",
        "AGENT_START_FAILED": "The detached agent exited during start; see logs/agent.out.",
        "AGENT_START_TIMEOUT": "The detached agent did not become ready in time.",
        "AGENT_STOP_TIMEOUT": "The agent did not stop in time.",
        "ARTIFACT_ERROR": "Base code of an artifact failure on the device.",
        "ARTIFACT_ALGORITHM_UNSUPPORTED": "A recipe's artifact digest uses an algorithm Roost does not check.",
        "ARTIFACT_DIGEST_MISMATCH": "An artifact's bytes differ from its recipe Digest or the hub's X-Roost-Sha256.",
        "ARTIFACT_INVALID": "An artifact URI names no file.",
        "ARTIFACT_MISSING": "An artifact file the recipe names is not where it should be (artifact folder, upload).",
        "ARTIFACT_UNSAFE_ARCHIVE": "An archive to unpack has members that would escape its folder.",
        "ARTIFACT_UNSAFE_FILE": "An artifact folder holds a link leading out of it or a FIFO, socket or device "
                                "(or, to publish, a link to a folder).",
        "ARTIFACT_FOLDER_TOO_LARGE": "An artifact folder has more files or bytes than the agent copies or the hub "
                                     "accepts (10,000 entries, 4 GiB).",
        "DOCKER_UNAVAILABLE": "A docker: artifact needs a Docker-compatible engine and none answers.",
        "DOCKER_PULL_FAILED": "An image of a docker: artifact is not on the device and the engine could not pull it.",
        "DOCKER_ENGINE_ERROR": "The Docker engine refused an image request (inspect, remove) with an error.",
        "DOCKER_HOST_INVALID": "--docker-host / DOCKER_HOST is not unix:///PATH or tcp://HOST:PORT.",
        "COMPONENT_BUSY": "The component is in a state that refuses the operation now; retry later.",
        "COMPONENT_FAILED": "A deployed component failed (ERRORED/BROKEN) during the deployment.",
        "COMPONENT_NOT_DEPLOYED": "The component to remove is not a local root component on this device.",
        "COMPONENT_NOT_FOUND": "No such component (on the device, or that version on the hub).",
        "CONFIG_KEY_NOT_FOUND": "No configuration value at that JSON pointer.",
        "DEPLOYMENT_ENDED": "The local deployment already ended; it cannot be canceled.",
        "DEPLOYMENT_FAILED": "A deployment failed; the message says which step.",
        "DEPLOYMENT_NOT_FOUND": "No deployment with that id (device or hub).",
        "INVALID_CONFIG_UPDATE": "A configuration update is not {MERGE: {...}, RESET: [pointers]}.",
        "INVALID_DEPLOYMENT": "A local deployment request is malformed.",
        "INVALID_IPC_LIMIT": "An IPC limit (--ipc-max-connections/--ipc-max-streams) is out of range.",
        "INVALID_POINTER": "A JSON pointer is malformed.",
        "INVALID_SKIPIF": "A lifecycle Skipif is neither 'onpath <exe>' nor 'exists <file>'.",
        "INVALID_STATE": "A component reported a state it may not set (only RUNNING or ERRORED).",
        "INVALID_TRANSITION": "The supervisor refused a component state transition.",
        "DIRECT_CHANNEL_UNAVAILABLE": ("A direct request/reply channel cannot be granted (several subscribers, no "
                                       "offer, a policy); the client publishes through the agent instead."),
        "IPC_NOT_AUTHENTICATED": "An IPC call before a successful CONNECT.",
        "IPC_STREAM_LIMIT": "A component opened more IPC streams than its cap; close some and retry.",
        "LIFECYCLE_STEP_FAILED": "A lifecycle step (Install, Startup, Run, ...) exited non-zero.",
        "LIFECYCLE_TIMEOUT": "A lifecycle step ran past its Timeout.",
        "LOG_NOT_FOUND": "No log file for that component (or the agent) on this root.",
        "POLICY_CHANGE_REFUSED": "A component tried to change accessControl over IPC; only deployments change policy.",
        "POSIX_GROUP_UNKNOWN": "The posixUser's group does not exist on this device.",
        "POSIX_USER_INVALID": "A posixUser value is malformed (USER[:GROUP]).",
        "POSIX_USER_UNAVAILABLE": "A component asks for another user but the agent is not root.",
        "POSIX_USER_UNKNOWN": "The posixUser does not exist on this device.",
        "RECIPE_NOT_FOUND": "No recipe of that component version in the package store or recipe folder.",
        "UNKNOWN_OPERATION": "An unknown Greengrass CLI IPC operation.",
        "ENROLL_TOKEN_REQUIRED": "The first start with --hub (or a move to another hub) needs --enroll-token.",
        "HUB_ALREADY_ENROLLED": "This root is enrolled under another device name; remove hub.json to re-enrol.",
        "HUB_CONFIG_INVALID": "ROOT/hub.json is unreadable or incomplete; remove it and enrol again.",
        "HUB_RECIPE_MISMATCH": "The hub's recipe for a component version describes another name or version.",
        "SHADOW_INVALID_NAME": "A thingName or shadowName is missing, too long or not [a-zA-Z0-9:_-]+.",
        "SHADOW_INVALID_DOCUMENT": "An UpdateThingShadow payload is not a shadow document (JSON object with state).",
        "SHADOW_DEPTH_EXCEEDED": "A shadow's desired or reported state nests deeper than 6 levels.",
        "SHADOW_INVALID_VERSION": "A shadow update's version is not an integer >= 0, or not 1 for a new shadow.",
        "SHADOW_INVALID_CLIENT_TOKEN": "A shadow update's clientToken is not a string of at most 64 characters.",
        "SHADOW_DOCUMENT_TOO_LARGE": "A shadow update would make desired + reported larger than the size limit.",
        "SHADOW_VERSION_CONFLICT": "A shadow update names a version other than the current one; get it, retry.",
        "SHADOW_NOT_FOUND": "No such shadow (GetThingShadow, DeleteThingShadow).",
        "SHADOW_LIMIT": "The agent already keeps as many shadows as it may; delete some first.",
        "SHADOW_INVALID_PAGE_SIZE": "ListNamedShadowsForThing's pageSize is not an integer from 1 to 100.",
        "SHADOW_INVALID_NEXT_TOKEN": "A nextToken not issued by this agent run for this thing and caller.",
        "SHADOWS_UNAVAILABLE": "The IPC server runs without local shadows (not an agent).",
        "METRIC_INVALID": "A PutComponentMetric request is malformed: empty list, bad name, unit or value.",
        "METRIC_LIMIT": "The agent keeps no more metric names for that component (or no more components).",
        "METRICS_UNAVAILABLE": "The IPC server runs without a component metrics store (not an agent).",
        "IPC_MESSAGE_TOO_LARGE": "An IPC request exceeds the agent's message size limit; refused, connection kept.",
        "SECRET_REQUEST_INVALID": "GetSecretValue without secretId, or with both versionId and versionStage "
                                  "(ServiceError, as on Greengrass).",
        "IOT_CORE_NOT_CONFIGURED": "An IoT Core operation on an agent without an MQTT broker (--mqtt-broker).",
        "IOT_CORE_TOPIC_INVALID": "An IoT Core topic breaks AWS IoT Core's rules (wildcards, over 7 '/' or 256 bytes).",
        "IOT_CORE_QOS_INVALID": "An IoT Core qos is missing or not \"0\"/\"1\".",
        "IOT_CORE_MESSAGE_TOO_LARGE": "An IoT Core payload exceeds mqtt.maxMessageSizeInBytes (128 KiB by default).",
        "IOT_CORE_SPOOL_FULL": "The broker is away and the IoT Core spool (all QoS 1) refused the message.",
        "IOT_CORE_OFFLINE": "The broker is away and QoS 0 messages are not kept (keepQos0WhenOffline: false).",
        "IOT_CORE_SUBSCRIBE_FAILED": "The broker refused a SubscribeToIoTCore filter, or no SUBACK came in time.",
        "MQTT_CONFIG_INVALID": "The agent's MQTT settings (--mqtt-*, mqtt: in ROOT/agent.yaml) are malformed.",
        "MQTT_BRIDGE_CONFIG_INVALID": "The MQTT bridge's configuration (mqttTopicMapping, brokerUri) is malformed.",
        "CONFIGURATION_REJECTED": "A component rejected a deployment's new configuration; nothing changed.",
        "CONFIGURATION_VALIDATION_TIMEOUT": "A component sent no configuration validity report in time; no change.",
        "UPDATE_NOT_PENDING": "DeferComponentUpdate names no update waiting for this component (timed out or unknown).",
        "VALIDATION_NOT_PENDING": "A validity report names no validation waiting for it (timed out or unknown).",
        "NOT_SUBSCRIBED": "DeferComponentUpdate from a component not subscribed to component updates.",
        "COMPONENT_NOT_RUNNING": "PauseComponent of a component that is not RUNNING (or has no live process).",
        "COMPONENT_NOT_PAUSED": "ResumeComponent of a component that is not paused.",
        "COMPONENT_NOT_PAUSABLE": "Pause/ResumeComponent of a component built into the agent (not a generic one).",
        "PAUSE_FAILED": "The component's processes could not be frozen (cgroup freezer or SIGSTOP); see the message.",
    },
    "roost.hub (server: store, REST API)": {
        "HUB_ERROR": "Base code of a hub error.",
        "FORBIDDEN": "Valid credentials that may not do this (a device calling an admin route).",
        "GONE": "A one-time thing was already used.",
        "UNPROCESSABLE": "Well-formed input the hub cannot use.",
        "PAYLOAD_TOO_LARGE": "An upload is larger than the hub accepts (413).",
        "INVALID_NAME": "A device, group, component, version or file name is not allowed (400).",
        "ARTIFACT_DUPLICATE": "An upload names the same artifact file twice.",
        "ARTIFACT_FORBIDDEN": "A device asked for an artifact of a component not in its desired state (403).",
        "ARTIFACT_NOT_FOUND": "No such artifact file of that component version (404).",
        "ARTIFACT_TOO_LARGE": "An artifact file is over --max-artifact-bytes (413).",
        "DEPLOYMENT_FINISHED": "The hub deployment already ended and can no longer be canceled (409).",
        "DEPLOYMENT_ID_AMBIGUOUS": "A deployment id prefix matches several deployments (400); the message lists them.",
        "DEPLOYMENT_NOT_FOR_DEVICE": "A device reported on a deployment never made for it (403); do not resend.",
        "DESIRED_STATE_CONFLICT": "Two deployments want different versions of one component on one device.",
        "DEVICE_EXISTS": "A device of that name is already enrolled (409).",
        "DEVICE_NOT_FOUND": "No such device (404).",
        "DEVICE_REVOKED": "The device was revoked; its credential is refused (401).",
        "ENROLL_TOKEN_EXPIRED": "The enrolment token expired; create another (401).",
        "ENROLL_TOKEN_INVALID": "Unknown enrolment token (401).",
        "ENROLL_TOKEN_USED": "The one-time enrolment token was already redeemed (410).",
        "GROUP_NOT_FOUND": "No such group (404); deploy to a new group only with create_group / --create-group.",
        "INVALID_CONFIGURATION": "Deployment configuration for components not in the deployment (422).",
        "BUILTIN_NOT_DEPLOYABLE": "A hub deployment names an AWS-provided component every agent builds in (422).",
        "INVALID_CREDENTIAL": "Unknown device credential (401).",
        "INVALID_FAILURE_POLICY": "failure_policy is not ROLLBACK or DO_NOTHING (422).",
        "INVALID_ROLLOUT": "A rollout setting (rate, abort threshold, timeout) is out of range (422).",
        "INVALID_TARGET": "A deployment target is not device:NAME or group:NAME (422).",
        "INVALID_TOKEN": "Unknown API token (401).",
        "INVALID_TTL": "An enrolment token's ttl_seconds is out of range.",
        "INVALID_UPLOAD": "A component upload is not the expected multipart body (400).",
        "MEMBER_NOT_FOUND": "The device is not a member of that group (404).",
        "REVISION_NOT_GIVEN": "A device reported a revision newer than any the hub gave it (409); do not resend.",
        "TOKEN_REVOKED": "The API token was revoked (401).",
        "UNKNOWN_COMPONENT": "A deployment names a component version the hub does not have (422).",
        "VERSION_EXISTS": "That component version is already published; versions are immutable (409).",
        "BAD_REQUEST": "The web framework refused the request (400).",
        "METHOD_NOT_ALLOWED": "No such method on that route (405).",
        "UNSUPPORTED_MEDIA_TYPE": "The request body's content type is not accepted (415).",
        "VALIDATION_ERROR": "The request body or query fails validation; the message names the field (422).",
        "INTERNAL_ERROR": "An unexpected server error; the hub's log has the traceback (500).",
        "INVALID_SECRET_NAME": "A secret name is neither a plain Secrets Manager name nor a secret ARN (400).",
        "INVALID_SECRET_VALUE": "A secret value is empty, over 64 KiB, not base64 (binary) or not UTF-8 (text).",
        "SECRET_NOT_FOUND": "No such secret on the hub (404), or that secret, version or stage is not on the device.",
        "SECRET_KEY_MISSING": "The hub has no secrets key file configured (500).",
        "SECRET_KEY_INVALID": "A secrets key file is not 32 bytes; restore the right key file.",
        "SECRET_UNSEAL_FAILED": "A sealed secret does not open: another key sealed it (a replica's own key?) or "
                                "it was altered.",
        "VALIDATION_REPORT_INCONSISTENT": ("A validation report contradicts its own numbers (a regression or passed "
                                           "flag its metrics do not give, a number that is not finite, an accuracy "
                                           "above 1) (422)."),
        "VALIDATION_REPORT_MISSING": ("The model version has no validation report at the hub, and the gate (--max-"
                                      "regression, --baseline) needs one: attach it with `roost model validate`."),
        "DEPLOYMENT_GATE_FAILED": ("A model version of the deployment fails its validation gate against its baseline "
                                   "(or its own variant gate); nothing was deployed. Override only with --override-"
                                   "gate and a reason (409, exit code 7)."),
        "GATE_OVERRIDE_REASON_MISSING": ("--override-gate without --override-reason: an override must say why (the "
                                         "reason is recorded in the deployment) (422)."),
        "GATE_BASELINE_INCOMPARABLE": ("A version and its baseline were validated on different held-out data or "
                                       "metrics (or the baseline names a component not deployed); validate both on the"
                                       " same file (422)."),
        "BENCHMARK_RECORD_INVALID": ("A benchmark measurement is malformed: a latency that is not a finite number > 0,"
                                     " calls out of range, or a component version that is not published (422)."),
        "BENCHMARK_MISSING": ("No candidate was measured on the device's class yet: run the benchmark component on a "
                              "device of that class (`roost model benchmark`) (404)."),
        "NO_CANDIDATE_FITS": ("No candidate variant meets --max-latency-ms / --min-metric on the device's class; the "
                              "message names the nearest (409)."),
    },
    "roost.hub.client and the CLI's hub commands": {
        "HUB_SERVER_ERROR": "The hub answered 5xx; retry later.",
        "HUB_UNREACHABLE": "No connection to the hub (refused, DNS, reset); retry later.",
        "HUB_TIMEOUT": "The hub did not answer in time; retry later.",
        "HUB_PROTOCOL_ERROR": "The hub answered something this client does not understand (version skew?).",
        "INVALID_HUB_URL": "The hub URL does not start with http:// or https://.",
        "FILE_UNREADABLE": "A file to upload cannot be read.",
        "HUB_REQUIRED": "A hub command without --hub URL or $ROOST_HUB.",
        "TOKEN_REQUIRED": "A hub command without --token or $ROOST_TOKEN.",
        "HUB_ALREADY_INITIALISED": "hub init on a hub that has an admin token; --force mints another (exit code 7).",
        "DEMO_FAILED": "`roost demo` could not complete; the message says which step.",
    },
    "roost.serve (inference components, the Lambda host)": {
        "SERVE_ERROR": "Base code of an inference failure.",
        "MODEL_ERROR": "The model cannot be loaded or run.",
        "MODEL_INCOMPATIBLE": "A new model's features differ from the current model's.",
        "INFERENCE_FAILED": "The model raised while predicting; the message names the exception.",
        "BATCHER_CLOSED": "The request batcher is closed (the component is stopping).",
        "HANDLER_INIT_TIMEOUT": "A Lambda handler's module did not initialise in time.",
        "INVALID_HANDLER": "A Lambda handler name is not module.function, or it cannot be imported.",
    },
    "roost.observe (metrics: the agent's and the hub's /metrics, snapshots, service discovery)": {
        "METRICS_SETTINGS_INVALID": "A metrics option (--metrics-address, --metrics-token-file) or ROOT/metrics.json "
                                    "is malformed; the message names it.",
        "METRICS_TOKEN_REQUIRED": "The agent's /metrics needs 'Authorization: Bearer <token>' and none was sent (401).",
        "METRICS_TOKEN_INVALID": "The bearer token sent to the agent's /metrics is wrong (401).",
        "METRICS_SNAPSHOT_TOO_LARGE": "A device's metrics snapshot is over the hub's size limit (16 KiB, 413); "
                                      "the device's other reports are unaffected.",
        "METRICS_SNAPSHOT_INVALID": "A device's metrics snapshot is malformed (not JSON, a bad name or value, too "
                                    "many values or models; 422); the message names the field.",
    },
    "roost.cluster (edge clusters: admission, replicas, streaming sessions)": {
        "CLUSTER_ERROR": "Base code of an edge-cluster failure.",
        "SERVICE_TYPE_NOT_FOUND": "No cluster service type of that name is applied "
                                  "(roost cluster service-type apply).",
        "SERVICE_TYPE_INVALID": "A service type definition is malformed; the message names the field.",
        "SERVICE_UNSCHEDULABLE": "No node of any tier could ever run the service type (its requests or affinity).",
        "CLUSTER_FULL": "Neither the edge nor the centre has room for a replica now; retry later (503).",
        "REPLICA_NOT_READY": "A placed replica did not become ready within the admission's wait; retry (503).",
        "SESSION_NOT_FOUND": "No live cluster session of that id.",
        "SESSION_TOKEN_INVALID": "A session token is malformed, expired or not signed by the hub the replica trusts.",
        "QUANTITY_INVALID": "A resource quantity (16Gi, 500m, memory=16Gi,cpu=8) is malformed.",
        "NODE_CONFLICT": "A cluster node's state forbids the operation.",
        "KUBERNETES_API_ERROR": "The Kubernetes API server answered an error no more specific code describes; the "
                                "message names the call, the status and the API's message.",
        "KUBERNETES_CONFIG_INVALID": "The Kubernetes backend's configuration is unusable (kubeconfig, in-cluster "
                                     "account, namespace or image).",
        "KUBERNETES_FORBIDDEN": "The Kubernetes API refused the call (403): the hub's service account lacks a verb; "
                                "apply deploy/kubernetes/rbac.yaml.",
        "KUBERNETES_UNAUTHORIZED": "The Kubernetes API refused the credentials (401); renew the token or kubeconfig.",
        "KUBERNETES_NOT_FOUND": "The Kubernetes API has no such object (404), most often: the namespace does not "
                                "exist.",
        "KUBERNETES_UNAVAILABLE": "The Kubernetes API server cannot be reached or is overloaded (429/5xx); retry "
                                  "(503).",
        "KUBERNETES_CONFLICT": "Another writer kept changing the Deployment while Roost scaled it; retry.",
        "REPLICA_CONFIG_INVALID": "A replica's settings are unusable (kind, window, public key, model); the message "
                                  "names the setting.",
        "REPLICA_FULL": "The replica serves as many sessions (or holds as many claims) as it may; retry or ask the "
                        "hub for another replica (503).",
        "SESSION_ENDED": "That session already ended on the replica (its client left, or the hub ended it); ask "
                         "the hub for a new session (401).",
        "SESSION_ALREADY_CONNECTED": "That session already has a connection on the replica (409).",
        "CLAIM_REQUIRED": "A client of the original protocol (no token) connected while the replica holds no "
                          "unexpired claim for it (401).",
        "SESSION_LOST": "The stream's socket dropped or the replica closed it mid-session; ask for a new session.",
        "SESSION_IDLE_TIMEOUT": "The replica closed the stream after no window came for its idle timeout (close 4000).",
        "STREAM_MESSAGE_INVALID": "A stream message is neither a window (tabular) nor an image frame of the protocol.",
        "STREAM_FRAME_INVALID": "A binary stream frame is truncated, has bytes left over, or does not start with the "
                                "protocol's magic.",
        "WINDOW_INVALID": "A window has the wrong number of features, a value that is not a finite number, no rows "
                          "or more rows than the replica takes, or columns that do not name the model's features.",
        "IMAGE_INVALID": "An image frame's bytes do not decode as an image (JPEG, PNG, ...) or are too large.",
        "STREAM_PROTOCOL_ERROR": "The peer broke the stream protocol (no hello, an unknown reply, a refusal without "
                                 "a JSON error body).",
        "STREAM_DATA_INVALID": "The data to stream is unusable (an unreadable CSV, a value that is not a number, no "
                               "images).",
        "DATA_COLUMN_MISSING": "The CSV lacks a column the model expects (the message names it).",
        "REPLICA_UNREACHABLE": ("The stream client could not connect to the replica's endpoint (refused, DNS, "
                                "timeout)."),
    },
    "roost.learn (model lightening and validation gates)": {
        "LEARN_ERROR": "Base code of a roost.learn failure.",
        "MODEL_MISSING": "The model file (or image-model folder) to lighten does not exist (exit code 4).",
        "MODEL_UNREADABLE": "The model does not load: not a model, corrupt, or a kind Roost does not lighten (an "
                            "XGBoost .json/.ubj or an .onnx).",
        "VALIDATION_DATA_INVALID": "The validation data cannot be read (an unreadable or oversized CSV).",
        "VALIDATION_DATA_MISSING": "The validation (or calibration) CSV does not exist.",
        "VALIDATION_DATA_EMPTY": "The validation CSV has no header or no rows (pruning needs at least 2 rows).",
        "VALIDATION_LABEL_MISSING": "The validation CSV has no label column (quality unless --label names another).",
        "VALIDATION_COLUMN_MISSING": "The validation CSV lacks a feature column of the model (the message names it).",
        "VALIDATION_COLUMN_EXTRA": "The validation CSV has a column that is neither a model feature nor the label, "
                                   "or repeats one.",
        "VALIDATION_NOT_NUMERIC": "A validation cell is not a finite number (empty, text, nan), or a row is short; "
                                  "the message names the line and column.",
        "VALIDATION_IMAGE_UNREADABLE": "An image the validation CSV names cannot be read or decoded (the message "
                                       "names the line).",
        "VALIDATION_LABEL_UNKNOWN": "An image label is not a class of the model's labels.json (or the model has "
                                    "none).",
        "MAX_REGRESSION_INVALID": "--max-regression is not a finite number >= 0 (a fraction: 0.01 is 1 %).",
        "LIGHTEN_TARGET_UNKNOWN": "--to (or --int8-mode) names no known transformation: int8, compiled, pruned "
                                  "(dynamic, static).",
        "LIGHTEN_NOT_APPLICABLE": "The transformation does not apply to this model kind (int8 on XGBoost, compiled "
                                  "or pruned on ONNX, publishing int8), or the objective has no metric.",
        "NOTHING_TO_QUANTIZE": "--to int8 on an ONNX model without weights to quantise (a tree ensemble).",
        "ALREADY_QUANTIZED": "--to int8 on an ONNX model that is already quantised.",
        "LIGHTEN_OUTPUT_EXISTS": "The --out folder exists and is not empty; nothing was overwritten (exit code 7).",
        "LIGHTEN_FAILED": "The quantiser or the compiler failed on the model; the message carries why.",
        "VARIANT_INVALID": "A variant folder has no valid variant.json, or its files do not match their sha256.",
        "GATE_FAILED": "The variant failed its validation gate: it is not publishable (exit code 7).",
        "LEARN_JOB_FAILED": "A federated learning job failed; the message names the round, device or value.",
        "LEARN_TASK_UNKNOWN": "--task names no federated task Roost ships (wine).",
        "LEARN_STRATEGY_UNKNOWN": "--strategy is not one of fedxgb-bagging, fedxgb-cyclic, fedavg, fedprox.",
        "LEARN_ROUNDS_OUT_OF_RANGE": "--rounds is outside 1..100.",
        "LEARN_PARTICIPANTS_INVALID": "--min-participants is below 1, above the target's devices, or above 32.",
        "LEARN_TARGET_EMPTY": "The target group has no device to train on.",
        "LEARN_DATA_MISSING": "A device's configured data path does not exist or is not a readable file.",
        "LEARN_TOO_FEW_PARTICIPANTS": "A round ended with fewer usable updates than --min-participants (devices "
                                      "left, failed or sent rejected updates).",
        "LEARN_UPDATE_REJECTED": "A device's model update was rejected (corrupt, wrong shape or over the size "
                                 "limit); the round record carries the reason.",
        "LEARN_FLOWER_MISSING": "The Flower venv is not installed: run `make flower` (or set ROOST_FLOWER_BIN).",
        "LEARN_FLOWER_FAILED": "A Flower process (SuperLink, SuperNode, flwr run) did not start, exited early or "
                               "did not end within its timeout.",
        "LEARN_JOB_STATE": "A federated job state change the job's state machine does not allow.",
        "LEARN_JOB_NOT_FOUND": "No federated learning job with that id at the hub (404).",
        "LEARN_JOBS_BUSY": "The hub already has 16 federated learning jobs waiting or running (409); try later.",
        "LEARN_JOIN_TIMEOUT": "Fewer SuperNodes than the job expects joined its SuperLink within the join "
                              "timeout (the message names how many joined).",
        "LEARN_HUB_RESTARTED": "The hub process running a federated job stopped (its SuperLink with it): the "
                               "restarted hub failed the job, naming its state and round, and removed the "
                               "SuperNode from its devices; start the job again.",
        "LEARN_MODEL_MISSING": "A federated job ended without its final model file (model.json or linear.json); "
                               "nothing was published.",
        "LEARN_MODEL_INVALID": "A federated job's final model does not load, is not the wine task's model, or "
                               "cannot be made servable; nothing was published.",
        "LEARN_COMPONENT_UNKNOWN": "A learn job's --component names a component with no version in the registry "
                                   "(only the default com.roost.WineQuality may start at 1.0.0).",
        "LEARN_COMPONENT_NOT_SERVING": "A learn job's --component is not a model-serving component: its latest "
                                       "version's recipe does not run `roost serve --model`.",
    },
    "roost.learn (joint inference with hard-example offload, parallel inference)": {
        "FILTER_UNKNOWN": "A hard-example filter name is not threshold, cross-entropy, margin or random (IBT is "
                          "for object-detection boxes); the message lists the filters.",
        "FILTER_THRESHOLD_INVALID": "A hard-example filter's threshold (or random ratio) is not a number from 0 "
                                    "to 1.",
        "FILTER_NEEDS_PROBABILITIES": "The edge model gives no class probabilities (a regressor, multi:softmax): "
                                      "only the random filter can choose its hard examples.",
        "FEATURES_MISMATCH": "The edge and centre models (or two replicas of a parallel run, or the data and the "
                             "model) have different feature counts or names; the message names both.",
        "CENTRE_UNREACHABLE": "Joint inference could not reach the centre model (refused, lost, timed out): the "
                              "edge answers flagged centre_error, or with --require-centre this error (retry).",
        "PARALLEL_REPLICA_LOST": "A replica's session was lost mid-stream in a parallel run; its unanswered windows "
                                 "were sent to the other replicas (a report entry, not a failure).",
        "PARALLEL_REPLICAS_LOST": "Every replica of a parallel run was lost before all windows were answered; the "
                                  "message names them and how many windows were left (retry).",
    },
    "roost.provision (devices registered and provisioned over SSH, service units)": {
        "PROVISION_FAILED": "A registration, upgrade or uninstall over SSH failed; the message says why.",
        "SERVICE_UNIT_INVALID": "An install-service option is unusable (unit or user name, a path a unit cannot "
                                "carry, --user with a user unit); the message names it.",
        "SERVICE_UNIT_FAILED": "A service unit could not be installed: no root for a system unit, useradd or "
                               "systemctl failed (the message carries their output).",
        "SERVICE_UNIT_OTHER_ROOT": "uninstall-service found a unit of that name running another root; name the "
                                   "root's own unit with --name.",
        "SSH_TARGET_INVALID": "An SSH target is not user@host[:port] (the message names the part: user, host, port, "
                              "IPv6 brackets).",
        "HOST_KEY_INVALID": "A host key given (--host-key, a re-pin) is not 'TYPE BASE64' of a known key type.",
        "SSH_UNREACHABLE": "The device does not answer on its SSH port (refused, unknown host, no route, timeout); "
                           "retry.",
        "SSH_FAILED": "The SSH session failed for a reason other than the network, the key or the host key.",
        "SSH_AUTH_REFUSED": "The device refused the hub's key: put `roost hub ssh-key` in the account's "
                            "~/.ssh/authorized_keys (exit code 8).",
        "HOST_KEY_MISMATCH": "The device's host key is not the one given with --host-key (exit code 7).",
        "HOST_KEY_CHANGED": "The device's host key differs from the pinned one: check it on the device, then re-pin "
                            "(roost device pin-host-key, or --host-key) (exit code 7).",
        "SSH_KEY_INVALID": "The hub's SSH key file is unreadable, not an OpenSSH key, or readable by others.",
        "SSH_IDENTITY_MISSING": "The hub has no SSH key yet: run `roost hub init` (or `roost hub ssh-key`).",
        "PYTHON_UNSUITABLE": "The device has no python3 >= 3.11 with its venv module (apt install python3-venv).",
        "PROVISION_STEP_FAILED": "A step of the provisioning playbook failed; the message names the step, the host "
                                 "and Ansible's message. Fix it and run the same command again: it resumes.",
        "PROVISION_STEP_TIMEOUT": "A provisioning step (or the whole playbook) did not end within its timeout.",
        "PROVISION_INTERRUPTED": "The hub process running a registration stopped before it ended; run it again.",
        "PROVISION_WAIT_TIMEOUT": "`roost device add/upgrade/remove` stopped waiting; the run goes on in the hub.",
        "BECOME_FAILED": "--become was refused: a wrong sudo password, or the account may not use sudo (exit code 8).",
        "REGISTRATION_RUNNING": "The device has a registration, upgrade or uninstall under way (409).",
        "PROVISION_BUSY": "The hub process runs or queues as many provisioning runs as it may (32); retry later (409).",
        "REGISTRATION_NOT_FOUND": "No such registration run, or the device was never registered over SSH (404).",
        "DIST_NOT_FOUND": "The hub serves no such wheel under /v1/dist (404).",
        "DIST_UNAVAILABLE": "The hub has no wheel of its Roost and cannot build one (no source), or the build failed.",
        "WHEELHOUSE_MISSING": "--wheelhouse was asked for but the hub has none: run `roost hub wheelhouse build`.",
        "ANSIBLE_MISSING": "ansible-playbook is not installed beside the hub.",
    },
}


def meaning(code: str) -> str | None:
    """What ``code`` means (``None`` for a code nobody registered)."""
    for codes in CODES.values():
        if code in codes:
            return codes[code]
    return None
