"""The Kubernetes backend: a kopf operator applying the core plan to Jobs, Pods and ConfigMaps."""
