"""LocalStack's start hook for the local stack (hack/stack/stack.sh with WINDLASS_STACK_AWS=localstack).

LocalStack serves EC2, SSM, IAM and STS from its own fork of moto's models (SQS is its own), so
the changes hack/stack/moto_server.py makes to moto are made here too, inside LocalStack's
process: SSM writes under the two /aws/service/ prefixes the stack's fixture seeds, the
insufficient-capacity fault injection, fleet instances given their launch template's
security groups, and CreateFleet's ClientToken. Its IAM enforcement for tagged roles is loaded
too but covers moto's services only: LocalStack's SQS checks no policy. Likewise the
per-client faults reach only the calls LocalStack hands to moto's request handler (EC2's);
its gateway hands no socket over, so `drop` and `lost` answer an internal error there.

LocalStack runs every *.py file in its init/start.d folder with exec() before it serves; the
stack copies this file there and names this folder in WINDLASS_STACK_HOOKS.
"""

import os
import sys

sys.path.insert(0, os.environ["WINDLASS_STACK_HOOKS"])

import moto_server  # noqa: E402,F401  (importing it makes its changes)
