"""A trial that writes hostile output into its own pod's ``kubetune.io/metrics`` annotation, with a raw merge patch
(the SDK refuses such reports). ``--mode``:

* ``many``: the objective ``score`` and 5,000 other metrics, plus one with a 5,000-character name;
* ``hugeint``: ``score`` as an integer literal of 400 digits (beyond float range);
* ``deep``: 100,000 levels of nested brackets;
* ``ok``: an ordinary SDK report.
"""

import json
import os
import ssl
import sys
import urllib.request

import kubetune_trial as kt

mode = sys.argv[sys.argv.index("--mode") + 1]


def patch_annotation(text: str) -> None:
    sa = os.environ.get("KUBETUNE_SERVICEACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
    with open(os.path.join(sa, "token")) as f:
        token = f.read().strip()
    namespace = os.environ["KUBETUNE_POD_NAMESPACE"]
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    url = f"https://{host}:{port}/api/v1/namespaces/{namespace}/pods/{os.environ['KUBETUNE_POD_NAME']}"
    body = json.dumps({"metadata": {"annotations": {"kubetune.io/metrics": text}}}).encode()
    request = urllib.request.Request(url, data=body, method="PATCH", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"})
    ctx = ssl.create_default_context(cafile=os.path.join(sa, "ca.crt"))
    with urllib.request.urlopen(request, context=ctx, timeout=30) as resp:
        resp.read()


if mode == "many":
    metrics = {f"m{i:04d}": i / 8 for i in range(5000)}
    metrics["x" * 5000] = 1.0
    metrics["score"] = 0.5
    patch_annotation(json.dumps({"seq": 1, "metrics": metrics}, separators=(",", ":")))
elif mode == "hugeint":
    patch_annotation('{"seq":1,"metrics":{"score":1' + "0" * 400 + "}}")
elif mode == "deep":
    patch_annotation("[" * 100_000 + "]" * 100_000)
else:
    kt.report(score=0.25)
