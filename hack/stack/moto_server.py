"""moto server for the local stack: moto's own server with two changes.

1. AWS publishes the EKS-optimized and Bottlerocket AMI ids as public SSM parameters under
   /aws/service/, and EC2NodeClass aliases (al2023@latest, ...) resolve through them. moto
   refuses writes anywhere under /aws/service/, so the stack's fixture could not seed them; this
   server lets writes through for exactly those two prefixes.
2. Fault injection for insufficient capacity, which moto never reports. While the SSM parameter
   /windlass-test/insufficient-capacity/<cluster> holds `capacity-type:instance-type:zone`
   entries (comma-separated, `*` matches anything), a CreateFleet that tags its instances with
   windlass.dev/cluster=<cluster> leaves out the overrides they match and reports each as
   InsufficientInstanceCapacity, as EC2 does for an instant fleet. One parameter per cluster
   name keeps concurrent tests apart.
3. Security groups for fleet instances. moto's CreateFleet ignores the launch template's groups:
   a spot instance gets the VPC's default group and an on-demand one none at all, where EC2 gives
   both the template's (SecurityGroupIds, or the first network interface's Groups). Windlass
   reads them back for drift, so each launched instance is given its template version's groups.
4. IAM enforcement for chosen roles. moto checks no request against IAM unless told to, and
   then checks every one, which the stack's static "testing" keys (no IAM user) would fail.
   Here a request signed with the temporary keys of a role assumed through STS is checked when
   that role exists in moto's IAM with the tag windlass-test/enforce-iam=true: its SigV4
   signature and session token, and the role's inline and attached identity policies for the
   action and the resource moto names (SQS: the queue's ARN), as moto's own enforcement does.
   Every other request is served unchecked, as before.
5. Per-client faults on any operation (hack/stack/faults.py has the rules): a request whose
   User-Agent carries the AWS SDK application id `app/<id>` (AWS_SDK_UA_APP_ID) is failed as
   the SSM parameter /windlass-test/faults/<id> says: throttled with the service's throttling
   error (EC2 RequestLimitExceeded, HTTP 503; SQS RequestThrottled; ThrottlingException or
   Throttling elsewhere), answered 500 InternalError, served late, its connection closed
   without an answer, or served and then its answer lost that way. Counts of what was injected
   go to /windlass-test/faults-injected/<id>.
6. CreateFleet's ClientToken, which moto ignores. EC2 answers a second CreateFleet with a
   token it has seen as it answered the first, launching nothing: a client whose answer was
   lost retries safely. Here a launch's answer is kept by account, region and token and given
   again; a call that launched nothing is not kept, since whether EC2 repeats such an answer
   or launches is not something these tests rely on.
"""

import fnmatch
import inspect
import random
import socket
import sys
import threading
import time
import uuid
from urllib.parse import urlparse

import faults
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.responses import ActionResult, BaseResponse
from moto.core.utils import utcnow
from moto.ec2.responses.fleets import Fleets
from moto.iam.models import iam_backends
from moto.ssm import models
from moto.sts.models import sts_backends
from moto.utilities.utils import get_partition
from werkzeug.exceptions import HTTPException

INSUFFICIENT_CAPACITY = "/windlass-test/insufficient-capacity"

PUBLISHED_BY_AWS = ("/aws/service/eks/", "/aws/service/bottlerocket/")
_moto_put_parameter = models.SimpleSystemManagerBackend.put_parameter


def parameter_timestamp():
    """Now, as this moto's Parameter keeps its last modified date: a datetime in moto, seconds as
    a float in LocalStack's fork of it, which rounds the value when it answers."""
    kept_as = inspect.signature(models.Parameter.__init__).parameters["last_modified_date"].annotation
    return time.time() if "float" in str(kept_as) else utcnow()


def new_parameter(backend, name, value, version, parameter_type="String", description=None):
    return models.Parameter(
        account_id=backend.account_id,
        name=name,
        value=value,
        parameter_type=parameter_type,
        description=description,
        allowed_pattern=None,
        keyid=None,
        last_modified_date=parameter_timestamp(),
        version=version,
        data_type="text",
    )


def put_parameter(self, name, description, value, parameter_type, *args, **kwargs):
    if not name.startswith(PUBLISHED_BY_AWS):
        return _moto_put_parameter(self, name, description, value, parameter_type, *args, **kwargs)
    versions = self._parameters[name]
    parameter = new_parameter(self, name, value, len(versions) + 1, parameter_type or "String", description)
    versions.append(parameter)
    return parameter


models.SimpleSystemManagerBackend.put_parameter = put_parameter

_moto_create_fleet = Fleets.create_fleet


def fleet_cluster(tag_specifications):
    for spec in tag_specifications:
        for tag in spec.get("Tags") or spec.get("Tag") or []:
            if tag.get("Key") == "windlass.dev/cluster":
                return tag.get("Value")
    return None


def exhausted_offerings(account, region, cluster):
    if cluster is None:
        return []
    parameter = models.ssm_backends[account][region].get_parameter(f"{INSUFFICIENT_CAPACITY}/{cluster}")
    if parameter is None:
        return []
    return [entry.strip().split(":") for entry in parameter.value.split(",") if entry.count(":") == 2]


def template_security_groups(ec2_backend, specification):
    data = ec2_backend.get_launch_template(specification["LaunchTemplateId"]).get_version(specification["Version"]).data
    if data.get("SecurityGroupIds"):
        return data["SecurityGroupIds"]
    interfaces = data.get("NetworkInterfaces") or [{}]
    return interfaces[0].get("Groups") or []


def launch_fleet(self):
    result = _moto_create_fleet(self)
    for launched in result.result.get("Instances") or []:
        specification = launched["LaunchTemplateAndOverrides"]["LaunchTemplateSpecification"]
        groups = template_security_groups(self.ec2_backend, specification)
        if not groups:
            continue
        for instance_id in launched["InstanceIds"]:
            self.ec2_backend.modify_instance_security_groups(instance_id, groups)
    return result


def create_fleet(self):
    cluster = fleet_cluster(self._get_param("TagSpecifications", []))
    exhausted = exhausted_offerings(self.current_account, self.region, cluster)
    if not exhausted:
        return launch_fleet(self)
    capacity = self._get_param("TargetCapacitySpecification", {})
    capacity_type = capacity.get("DefaultTargetCapacityType", "on-demand")
    configs = self._get_param("LaunchTemplateConfigs", [])
    kept_configs, errors = [], []
    for config in configs:
        kept = []
        for override in config.get("Overrides") or []:
            zone = self.ec2_backend.get_subnet(override["SubnetId"]).availability_zone
            offering = (capacity_type, override.get("InstanceType", ""), zone)
            if any(all(fnmatch.fnmatch(value, pattern) for value, pattern in zip(offering, entry)) for entry in exhausted):
                errors.append({
                    "LaunchTemplateAndOverrides": {
                        "LaunchTemplateSpecification": config["LaunchTemplateSpecification"],
                        "Overrides": override,
                    },
                    "Lifecycle": capacity_type,
                    "ErrorCode": "InsufficientInstanceCapacity",
                    "ErrorMessage": f"There is no {capacity_type} capacity for {offering[1]} in {zone}",
                })
            else:
                kept.append(override)
        if kept:
            kept_configs.append({**config, "Overrides": kept})
    if not kept_configs:
        fleet_id = "fleet-" + "".join(random.choice("0123456789abcdef") for _ in range(17))
        return ActionResult({"FleetId": fleet_id, "Errors": errors, "Instances": []})
    get_param = self._get_param
    self._get_param = lambda name, if_none=None: kept_configs if name == "LaunchTemplateConfigs" else get_param(name, if_none)
    try:
        result = launch_fleet(self)
    finally:
        self._get_param = get_param
    return ActionResult({**result.result, "Errors": errors})


_launches_by_token = {}
_launches_lock = threading.Lock()


def idempotent_create_fleet(self):
    token = self._get_param("ClientToken")
    if not token:
        return create_fleet(self)
    key = (self.current_account, self.region, token)
    # Held while launching, so that a retry racing the call it repeats waits for its answer.
    with _launches_lock:
        if key in _launches_by_token:
            return _launches_by_token[key]
        result = create_fleet(self)
        if result.result.get("Instances"):
            _launches_by_token[key] = result
        return result


Fleets.create_fleet = idempotent_create_fleet

ENFORCE_IAM_TAG = "windlass-test/enforce-iam"


def enforced_role(account, region, headers):
    """The role whose temporary keys signed the request, if it asks for IAM enforcement."""
    access_key = (headers.get("Authorization") or "").partition("Credential=")[2].partition("/")[0]
    if not access_key or "X-Amz-Security-Token" not in headers:
        return None
    partition = get_partition(region)
    assumed = sts_backends[account][partition].get_assumed_role_from_access_key(access_key)
    if assumed is None:
        return None
    try:
        role = iam_backends[account][partition].get_role_by_arn(assumed.role_arn)
    except Exception:  # moto's NotFoundException: a role that IAM does not hold is not enforced
        return None
    tags = {tag["Key"]: tag["Value"] for tag in role.tags or []}
    return role if tags.get(ENFORCE_IAM_TAG) == "true" else None


def authenticate_and_authorize_action(self, iam_request_cls, resource="*"):
    if enforced_role(self.current_account, self.region, self.headers) is None:
        return
    path = self.raw_path
    query = urlparse(self.uri).query
    if query:
        path += "?" + query
    iam_request = iam_request_cls(
        account_id=self.current_account,
        method=self.method,
        path=path,
        data=self.data,
        body=self.raw_body,
        headers=self.headers,
        action=self._get_action(),
    )
    try:
        iam_request.check_signature()
        iam_request.check_action_permitted(resource)
    except HTTPException as refusal:
        # moto words the refusal in XML, which a JSON-protocol client (SQS today) cannot read.
        if "X-Amz-Target" in self.headers and hasattr(refusal, "to_json"):
            raise refusal.to_json() from refusal
        raise


ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate_and_authorize_action

fault_book = faults.FaultBook()


def fault_for(response):
    """The fault rule this request's client has for it, if any (change 5)."""
    headers = response.headers
    client = faults.app_id(headers.get("x-amz-user-agent"), headers.get("User-Agent"))
    if client is None:
        return None
    backend = models.ssm_backends[response.current_account][response.region]
    rules = backend.get_parameter(f"{faults.RULES}/{client}")
    if rules is None:
        return None

    def publish(injected):
        # One version, replaced in place: the counts change with every fault, and an SSM
        # parameter keeps at most 100 versions.
        name = f"{faults.INJECTED}/{client}"
        versions = backend._parameters[name]
        version = versions[-1].version + 1 if versions else 1
        versions[:] = [new_parameter(backend, name, injected, version)]

    # A parameter deleted and written again starts at version 1 again: its write time tells
    # the new rules from the spent ones.
    written = (rules.version, rules.last_modified_date)
    try:
        return fault_book.fault_for(client, written, rules.value, response._get_action(), publish)
    except ValueError as error:
        print(f"moto_server: {faults.RULES}/{client}: {error}; no faults injected", file=sys.stderr)
        return None


def drop_connection(response):
    """Closes the request's connection so that no answer reaches the client; False where the
    server does not hand the socket over (werkzeug does; LocalStack's gateway does not)."""
    request = getattr(response, "normalized_request", None)
    connection = request.environ.get("werkzeug.socket") if request is not None else None
    if connection is None:
        return False
    connection.shutdown(socket.SHUT_RDWR)
    return True


_moto_call_action = BaseResponse.call_action


def call_action(self):
    rule = fault_for(self)
    if rule is None:
        return _moto_call_action(self)
    if rule.kind == "slow":
        time.sleep(rule.delay_ms / 1000)
        return _moto_call_action(self)
    if rule.kind == "lost":
        _moto_call_action(self)
    if rule.kind in ("drop", "lost"):
        if drop_connection(self):
            # werkzeug's write of this fails on the closed socket, which it takes for a client
            # gone.
            return 500, {}, ""
        # Where the connection cannot be dropped, the client gets an internal error instead:
        # it still cannot know whether the call took effect.
        return faults.error_answer(self.service_name, "error500", str(uuid.uuid4()))
    return faults.error_answer(self.service_name, rule.kind, str(uuid.uuid4()))


BaseResponse.call_action = call_action

if __name__ == "__main__":
    # Imported here: LocalStack loads this module for its changes alone, without moto's server.
    from moto.server import main

    main()
