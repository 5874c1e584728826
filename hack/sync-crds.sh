#!/bin/sh
# Regenerate the CRD from operator/kubetune/spec.py into crds/ and the Helm chart's crds/ (kept identical;
# tests/unit/test_chart_files.py checks it). Run from anywhere, with the package installed (pip install -e .).
set -eu
cd "$(dirname "$0")/.."
kubetune crd -o crds/tuningexperiments.kubetune.io.yaml
kubetune crd -o charts/kubetune/crds/tuningexperiments.kubetune.io.yaml
