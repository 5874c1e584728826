"""Label and annotation keys the operator puts on what it creates (all under the project's own domain)."""

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "kubetune"
EXPERIMENT = "kubetune.io/experiment"
TRIAL = "kubetune.io/trial"
TRIAL_NUMBER = "kubetune.io/trial-number"
RESULTS = "kubetune.io/results"

PARAMETERS_ANNOTATION = "kubetune.io/parameters"
METRICS_ANNOTATION = "kubetune.io/metrics"

FINALIZER = "kubetune.io/finalizer"
ANNOTATION_PREFIX = "kubetune.io"

SELECTOR = {MANAGED_BY: MANAGED_BY_VALUE}


def selector_string() -> str:
    return f"{MANAGED_BY}={MANAGED_BY_VALUE}"
