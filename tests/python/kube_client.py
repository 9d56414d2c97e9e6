"""The official Kubernetes Python client against a simulated cluster: the scale subresource
of a Deployment (read, replace, patch), and a Secret written with stringData.

Usage: kube_client.py KUBECONFIG
Prints one JSON line of what it saw; exits non-zero on the first surprise.
"""

import base64
import json
import sys
import time

from kubernetes import client, config


def deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="web", image="registry.example.com/web:1.0")]
                ),
            ),
        ),
    )


def main(kubeconfig: str) -> int:
    api_client = config.new_client_from_config(config_file=kubeconfig)
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    ns = "py"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))

    apps.create_namespaced_deployment(ns, deployment("web", 2))
    scale = apps.read_namespaced_deployment_scale("web", ns)
    assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1", scale
    assert scale.spec.replicas == 2, scale
    assert scale.status.selector == "app=web", scale

    scale.spec.replicas = 4
    replaced = apps.replace_namespaced_deployment_scale("web", ns, scale)
    assert replaced.spec.replicas == 4, replaced
    patched = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
    assert patched.spec.replicas == 3, patched
    live = apps.read_namespaced_deployment("web", ns)
    assert live.spec.replicas == 3, live.spec

    # The simulated controllers catch up: three pods, all ready.
    deadline = time.monotonic() + 20
    while True:
        status = apps.read_namespaced_deployment_status("web", ns).status
        if status.replicas == 3 and status.ready_replicas == 3:
            break
        assert time.monotonic() < deadline, f"the deployment never settled at 3 ready replicas: {status}"
        time.sleep(0.05)
    ready = apps.read_namespaced_deployment_scale("web", ns).status.replicas

    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="db"),
        data={"user": base64.b64encode(b"admin").decode()},
        string_data={"password": "s3cret"},
    )
    core.create_namespaced_secret(ns, secret)
    read = core.read_namespaced_secret("db", ns)
    assert read.string_data is None, read
    decoded = {k: base64.b64decode(v).decode() for k, v in sorted(read.data.items())}
    assert decoded == {"password": "s3cret", "user": "admin"}, decoded

    core.patch_namespaced_secret("db", ns, {"stringData": {"password": "rotated"}})
    rotated = core.read_namespaced_secret("db", ns)
    assert base64.b64decode(rotated.data["password"]).decode() == "rotated", rotated.data

    print(json.dumps({"scaled_to": live.spec.replicas, "ready": ready, "secret": decoded}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
