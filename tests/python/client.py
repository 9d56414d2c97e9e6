"""A CI job in Python: publish a JSON deploy intent with nats-py, read the JSON outcome events.

Usage: client.py NATS_URL CLUSTER ENVIRONMENT
Exits 0 when the intent succeeded with the phases in order. Nothing Coxswain-specific is
needed besides the documented subjects, headers and JSON schema (`coxswain schema intent`).
"""

import asyncio
import hashlib
import json
import sys
import time

import nats


async def main(url: str, cluster: str, environment: str) -> int:
    nc = await nats.connect(url)
    js = nc.jetstream()
    objects = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "py-web"}, "data": {"from": "python"}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "py-web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "py-web"}},
                "template": {
                    "metadata": {"labels": {"app": "py-web"}},
                    "spec": {"containers": [{"name": "web", "image": "registry.example.com/py-web:1.0"}]},
                },
            },
        },
    ]
    # The manifests digest: sha256 of the list as compact JSON with sorted keys.
    canonical = json.dumps(objects, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    digest = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    intent = {
        "schema_version": 1,
        "id": "python-ci-1",
        "cluster": cluster,
        "release": "py-web",
        "namespace": "py",
        "environment": environment,
        "version": "1.0",
        "manifests": {"source": "inline", "digest": digest, "objects": objects},
        "health": {"timeout_secs": 60},
        "requested_by": "python-ci",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    events = await js.subscribe(f"coxswain.event.{cluster}.py-web", ordered_consumer=True)
    ack = await js.publish(
        f"coxswain.intent.{cluster}.py-web",
        json.dumps(intent).encode(),
        headers={"Content-Type": "application/json", "Nats-Msg-Id": f"{cluster}.{intent['id']}"},
    )
    print(f"intent stored in {ack.stream} at sequence {ack.seq}", file=sys.stderr)

    phases = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        msg = await events.next_msg(timeout=deadline - time.monotonic())
        if msg.headers.get("Content-Type") != "application/json":
            print(f"event not JSON: {msg.headers}", file=sys.stderr)
            return 1
        event = json.loads(msg.data)
        if event["intent_id"] != intent["id"]:
            continue
        phases.append(event["phase"])
        if event["terminal"]:
            break
    await nc.close()
    print(json.dumps(phases))
    return 0 if phases == ["received", "applying", "progressing", "succeeded"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:4])))
