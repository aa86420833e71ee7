"""EKS Auth and the EKS Pod Identity Agent for the local stack: test infrastructure that plays
the AWS side of EKS Pod Identity, as kwok plays the kubelet. No emulator serves EKS Auth.

It answers, on one loopback port:

- EKS `CreatePodIdentityAssociation` and `ListPodIdentityAssociations`
  (POST / GET /clusters/{name}/pod-identity-associations), kept in memory;
- EKS Auth `AssumeRoleForPodIdentity` (POST /clusters/{name}/assume-role-for-pod-identity with
  {"token": ...}): the ServiceAccount token is checked with a TokenReview against the stack's
  API server (audience pods.eks.amazonaws.com), the association for (cluster, namespace,
  service account) is found, and the associated role is assumed through the stack's STS (moto's or
  LocalStack's);
- the Pod Identity Agent (GET /agent/{cluster}/v1/credentials, the token in the Authorization
  header, as the SDK's container credentials provider sends AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE):
  the same exchange, answered in the container credentials JSON. The real agent knows its
  cluster from its flags; here the path names it;
- GET /windlass-test/issued: every set of credentials handed out, for tests to see who asked.

Requests are not checked for a SigV4 signature, and a role's trust policy is not evaluated.

usage: eks_auth.py --port P --api-server URL --ca-file F --token T --aws-endpoint URL
                   --access-key-id KEY --region R
"""

import argparse
import json
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3

AUDIENCE = "pods.eks.amazonaws.com"
ACCOUNT = "123456789012"
SERVICE_ACCOUNT_USER = re.compile(r"^system:serviceaccount:([^:]+):([^:]+)$")
ASSOCIATIONS = re.compile(r"^/clusters/([^/]+)/pod-identity-associations$")
ASSUME_ROLE = re.compile(r"^/clusters/([^/]+)/assume-role-for-pod-identity$")
AGENT = re.compile(r"^/agent/([^/]+)/v1/credentials$")


class ServiceError(Exception):
    """An AWS error: its type (x-amzn-errortype) and HTTP status."""

    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def service_account_of(username):
    """(namespace, name) of a ServiceAccount's username, or None for any other user."""
    match = SERVICE_ACCOUNT_USER.match(username or "")
    return (match.group(1), match.group(2)) if match else None


def find_association(associations, cluster, namespace, service_account):
    for association in associations:
        if (association["clusterName"], association["namespace"], association["serviceAccount"]) == (
            cluster,
            namespace,
            service_account,
        ):
            return association
    return None


class PodIdentity:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.associations = []
        self.issued = []
        self.tls = ssl.create_default_context(cafile=args.ca_file)
        self.sts = boto3.client(
            "sts",
            endpoint_url=args.aws_endpoint,
            region_name=args.region,
            aws_access_key_id=args.access_key_id,
            aws_secret_access_key="testing",
        )

    def create_association(self, cluster, body):
        for field in ("namespace", "serviceAccount", "roleArn"):
            if not body.get(field):
                raise ServiceError(400, "InvalidParameterException", f"{field} is required")
        with self.lock:
            if find_association(self.associations, cluster, body["namespace"], body["serviceAccount"]):
                raise ServiceError(
                    409,
                    "ResourceInUseException",
                    "Association already exists for this service account in this namespace",
                )
            association_id = "a-" + uuid.uuid4().hex[:17]
            now = time.time()
            association = {
                "clusterName": cluster,
                "namespace": body["namespace"],
                "serviceAccount": body["serviceAccount"],
                "roleArn": body["roleArn"],
                "associationId": association_id,
                "associationArn": f"arn:aws:eks:{self.args.region}:{ACCOUNT}:podidentityassociation/{cluster}/{association_id}",
                "tags": body.get("tags") or {},
                "createdAt": now,
                "modifiedAt": now,
            }
            self.associations.append(association)
        return {"association": association}

    def list_associations(self, cluster, query):
        namespace = query.get("namespace", [None])[0]
        service_account = query.get("serviceAccount", [None])[0]
        with self.lock:
            found = [
                {key: a[key] for key in ("clusterName", "namespace", "serviceAccount", "associationArn", "associationId")}
                for a in self.associations
                if a["clusterName"] == cluster
                and namespace in (None, a["namespace"])
                and service_account in (None, a["serviceAccount"])
            ]
        return {"associations": found}

    def review(self, token):
        """The ServiceAccount (namespace, name) a token authenticates, for our audience."""
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [AUDIENCE]},
        }
        request = urllib.request.Request(
            f"{self.args.api_server}/apis/authentication.k8s.io/v1/tokenreviews",
            data=json.dumps(review).encode(),
            headers={"Authorization": f"Bearer {self.args.token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, context=self.tls, timeout=10) as response:
            status = json.load(response).get("status", {})
        if not status.get("authenticated") or AUDIENCE not in (status.get("audiences") or []):
            raise ServiceError(401, "InvalidTokenException", status.get("error") or "The token is not valid for pods.eks.amazonaws.com")
        subject = service_account_of(status.get("user", {}).get("username"))
        if subject is None:
            raise ServiceError(400, "InvalidTokenException", "The token is not a service account token")
        return subject

    def assume(self, cluster, token, via):
        """Credentials for the role associated with the token's ServiceAccount in `cluster`."""
        if not token:
            raise ServiceError(400, "InvalidParameterException", "token is required")
        namespace, service_account = self.review(token)
        with self.lock:
            association = find_association(self.associations, cluster, namespace, service_account)
        if association is None:
            raise ServiceError(
                404,
                "ResourceNotFoundException",
                f"No Pod Identity Association found for service account {namespace}/{service_account} in cluster {cluster}",
            )
        session = re.sub(r"[^\w+=,.@-]", "-", f"eks-{cluster}-{service_account}-{uuid.uuid4().hex[:8]}")[:64]
        assumed = self.sts.assume_role(RoleArn=association["roleArn"], RoleSessionName=session, DurationSeconds=3600)
        credentials = assumed["Credentials"]
        with self.lock:
            self.issued.append(
                {
                    "via": via,
                    "cluster": cluster,
                    "namespace": namespace,
                    "serviceAccount": service_account,
                    "roleArn": association["roleArn"],
                    "accessKeyId": credentials["AccessKeyId"],
                }
            )
        return association, assumed, credentials, (namespace, service_account)

    def assume_role_for_pod_identity(self, cluster, body):
        association, assumed, credentials, (namespace, service_account) = self.assume(cluster, body.get("token"), "eks-auth")
        return {
            "subject": {"namespace": namespace, "serviceAccount": service_account},
            "audience": AUDIENCE,
            "podIdentityAssociation": {
                "associationArn": association["associationArn"],
                "associationId": association["associationId"],
            },
            "assumedRoleUser": {
                "arn": assumed["AssumedRoleUser"]["Arn"],
                "assumeRoleId": assumed["AssumedRoleUser"]["AssumedRoleId"],
            },
            "credentials": {
                "accessKeyId": credentials["AccessKeyId"],
                "secretAccessKey": credentials["SecretAccessKey"],
                "sessionToken": credentials["SessionToken"],
                "expiration": credentials["Expiration"].timestamp(),
            },
        }

    def agent_credentials(self, cluster, token):
        _, _, credentials, _ = self.assume(cluster, token, "agent")
        expiration = credentials["Expiration"].astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "AccessKeyId": credentials["AccessKeyId"],
            "SecretAccessKey": credentials["SecretAccessKey"],
            "Token": credentials["SessionToken"],
            "Expiration": expiration,
        }


def handler(pod_identity):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, body, kind=None):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if kind:
                self.send_header("x-amzn-errortype", kind)
            self.end_headers()
            self.wfile.write(data)

        def serve(self, route):
            try:
                self.answer(200, route())
            except ServiceError as e:
                self.answer(e.status, {"message": e.message}, e.kind)
            except (urllib.error.URLError, OSError, ValueError) as e:
                self.answer(500, {"message": str(e)}, "InternalServerException")

        def body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_POST(self):
            path = urllib.parse.urlparse(self.path).path
            if match := ASSOCIATIONS.match(path):
                return self.serve(lambda: pod_identity.create_association(match.group(1), self.body()))
            if match := ASSUME_ROLE.match(path):
                return self.serve(lambda: pod_identity.assume_role_for_pod_identity(match.group(1), self.body()))
            self.answer(404, {"message": f"no route for POST {path}"}, "ResourceNotFoundException")

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            if match := ASSOCIATIONS.match(url.path):
                query = urllib.parse.parse_qs(url.query)
                return self.serve(lambda: pod_identity.list_associations(match.group(1), query))
            if match := AGENT.match(url.path):
                token = self.headers.get("Authorization")
                return self.serve(lambda: pod_identity.agent_credentials(match.group(1), token))
            if url.path == "/windlass-test/issued":
                with pod_identity.lock:
                    issued = list(pod_identity.issued)
                return self.answer(200, issued)
            if url.path == "/healthz":
                return self.answer(200, {"ok": True})
            self.answer(404, {"message": f"no route for GET {url.path}"}, "ResourceNotFoundException")

        def log_message(self, format, *args):
            print(f"{self.address_string()} {format % args}", flush=True)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-server", required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--aws-endpoint", required=True)
    parser.add_argument("--access-key-id", required=True)
    parser.add_argument("--region", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(PodIdentity(args)))
    server.serve_forever()


if __name__ == "__main__":
    main()
