#!/usr/bin/env python3
"""The seed scenario on the local stack, as hack/run-local.sh shows it to a newcomer.

Windlass is already running. This submits jobs through the jobs API (the data-processor
ScaledJob) and puts messages on the orders queue (the order-processor ScaledObject), prints what
happens as it happens (queue depth, replicas and Jobs, NodeClaims and nodes launched, Jobs done,
nodes removed), and ends with a summary: messages sent, Jobs succeeded and failed, nodes launched
and removed, and their cost at on-demand list prices (instance type x time alive x the price from
`windlass prices --bundled`). Reads only the API server and the jobs API; writes to SQS only to
send and, for the order workers this stack cannot run, to drain the orders queue.

Usage: hack/demo.py WINDLASS_BINARY   (the environment of `hack/stack/stack.sh up`, plus
WINDLASS_JOBS_ADDR and WINDLASS_JOBS_TOKEN)
"""

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

JOBS = 6
FAILING = {2, 4}  # these fail their first two attempts; the Jobs' backoffLimit retries the failed pods
ORDERS = 5
TIMEOUT = float(os.environ.get("WINDLASS_DEMO_TIMEOUT", "600"))
NAMESPACE = "default"

started = time.monotonic()


def say(line):
    print(f"[{time.monotonic() - started:5.0f}s] {line}", flush=True)


def kubectl_json(*args):
    out = subprocess.run(["kubectl", *args, "-o", "json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def condition(obj, type_):
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == type_:
            return c.get("status") == "True"
    return False


def parse_time(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def sqs(queue_url, **params):
    # moto, the stack's AWS, reads the region and service from the credential scope and does
    # not check the signature.
    region = os.environ["AWS_REGION"]
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "Authorization": f"AWS4-HMAC-SHA256 Credential={os.environ['AWS_ACCESS_KEY_ID']}/"
                                f"20260101/{region}/sqs/aws4_request, SignedHeaders=host, Signature=0"}
    body = urllib.parse.urlencode(params).encode()
    request = urllib.request.Request(queue_url, data=body, method="POST", headers=headers)
    urllib.request.urlopen(request, timeout=10).read()


def submit(addr, token, payload):
    body = json.dumps({"scaledJob": "data-processor", "namespace": NAMESPACE, "payload": payload}).encode()
    request = urllib.request.Request(
        f"http://{addr}/jobs", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["id"]


def prices(windlass):
    out = subprocess.run([windlass, "prices", "--bundled", "--region", os.environ["AWS_REGION"]],
                         check=True, capture_output=True, text=True).stdout
    return {name: float(price) for name, price in (line.split("\t") for line in out.splitlines())}


def main():
    windlass = sys.argv[1]
    table = prices(windlass)
    addr, token = os.environ["WINDLASS_JOBS_ADDR"], os.environ["WINDLASS_JOBS_TOKEN"]
    queues = json.load(open(os.environ["WINDLASS_STACK_FIXTURE"]))["queues"]

    print("\n== The demo: jobs and orders arrive, Windlass scales the workers and launches nodes, "
          "then gives everything back\n", flush=True)
    existing = {c["metadata"]["name"] for c in kubectl_json("get", "nodeclaims")["items"]}
    if existing:
        # The example NodeClaim holds the default pool's memory limit (8Gi) on its own.
        subprocess.run(["kubectl", "delete", "nodeclaims", "--all", "--wait=false"],
                       check=True, capture_output=True)
        say(f"gave back the example NodeClaim(s) {', '.join(sorted(existing))}: the default NodePool "
            "starts empty (its limits: 4 vCPU, 8Gi)")
    base = kubectl_json("get", "scaledjob", "data-processor", "-n", NAMESPACE).get("status", {})
    baseline = {k: base.get(k, 0) for k in ("succeeded", "failed", "retries")}

    for n in range(JOBS):
        submit(addr, token, {"n": n, "failTimes": 2} if n in FAILING else {"n": n})
    say(f"POST /jobs x{JOBS} -> {JOBS} messages on the jobs queue "
        f"({len(FAILING)} of them fail twice, then succeed on a retry)")
    for n in range(ORDERS):
        sqs(queues["orders"], Action="SendMessage", MessageBody=json.dumps({"order": n}))
    say(f"{ORDERS} messages on the orders queue (ScaledObject order-processor: 1 replica per 5)")

    claims = {}  # name -> {type, created, gone}
    top_shown = False
    drained = False
    last = None
    while time.monotonic() - started < TIMEOUT:
        job = kubectl_json("get", "scaledjob", "data-processor", "-n", NAMESPACE)
        obj = kubectl_json("get", "scaledobject", "order-processor", "-n", NAMESPACE)
        deploy = kubectl_json("get", "deployment", "order-processor", "-n", NAMESPACE)
        jobs = kubectl_json("get", "jobs", "-n", NAMESPACE, "-l", "windlass.dev/scaled-job=data-processor")
        seen = kubectl_json("get", "nodeclaims")["items"]
        now = time.time()

        status = job.get("status", {})
        done = {k: status.get(k, 0) - baseline[k] for k in baseline}
        running = sum(1 for j in jobs["items"] if not (condition(j, "Complete") or condition(j, "Failed")))
        jobs_queue = int(sum(v["value"] for v in status.get("triggerValues", {}).values()))
        orders_queue = int(sum(v["value"] for v in obj.get("status", {}).get("triggerValues", {}).values()))
        replicas = deploy["spec"].get("replicas", 0)
        ready = deploy.get("status", {}).get("readyReplicas", 0)

        current = set()
        for c in seen:
            name = c["metadata"]["name"]
            if name in existing:
                continue
            current.add(name)
            kind = c["metadata"].get("labels", {}).get("node.kubernetes.io/instance-type")
            if name not in claims:
                claims[name] = {"type": None, "created": parse_time(c["metadata"]["creationTimestamp"]),
                                "gone": None, "joined": False}
                say(f"+ NodeClaim {name} created for pending pods")
            if kind and not claims[name]["type"]:
                claims[name]["type"] = kind
                say(f"  NodeClaim {name} launched a {kind} (${table.get(kind, 0):.4f}/hour on demand)")
            node = c.get("status", {}).get("nodeName")
            if node and condition(c, "Initialized") and not claims[name]["joined"]:
                claims[name]["joined"] = True
                say(f"  node {node} joined and is Ready")
        for name, claim in claims.items():
            if name not in current and claim["gone"] is None:
                claim["gone"] = now
                say(f"- NodeClaim {name} removed, instance terminated "
                    f"(up {claim['gone'] - claim['created']:.0f}s)")

        live = sum(1 for c in claims.values() if c["gone"] is None)
        line = (f"jobs queue {jobs_queue}, Jobs {running} running / {done['succeeded']} succeeded / "
                f"{done['failed']} failed ({done['retries']} retries) | orders queue {orders_queue}, "
                f"order-processor {ready}/{replicas} replicas | nodes: {live} up, "
                f"{sum(1 for c in claims.values() if c['gone'])} removed")
        if line != last:
            say(line)
            last = line

        if not top_shown and any(c["joined"] for c in claims.values()):
            # The same moment as `windlass top` shows it, live, in another terminal.
            top = subprocess.run([windlass, "top"], check=True, capture_output=True, text=True).stdout
            say("what `windlass top` shows now (run it in another terminal to watch it live):")
            print("\n".join("    " + line for line in top.rstrip().splitlines()), flush=True)
            top_shown = True

        if not drained and ready >= 1:
            sqs(queues["orders"], Action="PurgeQueue")
            drained = True
            say("order-processor is a placeholder image (the stack runs no containers for it): the "
                "demo drains the orders queue as its workers would; scale-in follows the cooldown")
        # Each message ends in one success. A failing message given back may go to another Job's
        # pod, so a Job can now and then exhaust its backoffLimit; the ScaledJob then starts
        # another Job for that message.
        finished = done["succeeded"] >= JOBS and running == 0 and jobs_queue == 0
        if finished and drained and replicas == 0 and claims and live == 0:
            break
        time.sleep(2)
    else:
        say(f"stopped waiting after {TIMEOUT:.0f}s; the summary counts what happened so far")

    now = time.time()
    cost = sum(table.get(c["type"] or "", 0) * ((c["gone"] or now) - c["created"]) / 3600
               for c in claims.values())
    launched = sum(1 for c in claims.values() if c["type"])
    removed = sum(1 for c in claims.values() if c["type"] and c["gone"])
    print(f"""
== Summary after {time.monotonic() - started:.0f}s
  messages sent:  {JOBS + ORDERS} ({JOBS} jobs, {ORDERS} orders)
  Jobs:           {done['succeeded']} succeeded, {done['failed']} failed, {done['retries']} retries
  nodes:          {launched} launched, {removed} removed
  cost:           ${cost:.4f} at {os.environ['AWS_REGION']} on-demand list prices (instance type x time alive)
""", flush=True)


if __name__ == "__main__":
    main()
