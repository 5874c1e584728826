{{/*
Expand the name of the chart.
*/}}
{{- define "kubetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "kubetune.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "kubetune.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels: on every object the chart makes.
*/}}
{{- define "kubetune.labels" -}}
helm.sh/chart: {{ include "kubetune.chart" . }}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetune
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (the operator's pod). Never change these across upgrades: Deployment selectors are immutable.
*/}}
{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image reference: digest wins over tag; the tag defaults to the chart's appVersion.
*/}}
{{- define "kubetune.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Cluster mode (watch every namespace) when watchNamespaces is empty.
*/}}
{{- define "kubetune.clusterWide" -}}
{{- if empty .Values.watchNamespaces }}true{{- end }}
{{- end }}

{{/*
The namespaces that get the trial ServiceAccount, Role and RoleBinding, as a JSON list:
trialNamespaces if set, else watchNamespaces (namespaced mode), else the release namespace.
*/}}
{{- define "kubetune.trialNamespaces" -}}
{{- if .Values.trialNamespaces }}
{{- .Values.trialNamespaces | uniq | toJson }}
{{- else if .Values.watchNamespaces }}
{{- .Values.watchNamespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/*
Whether to render the ValidatingAdmissionPolicy for trial pods ("true" or empty).
"auto": when the cluster serves admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (helm install/upgrade
ask the cluster; `helm template` needs `--api-versions admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy`).
*/}}
{{- define "kubetune.trialPolicy" -}}
{{- $p := .Values.trialRbac.admissionPolicy.enabled }}
{{- if and .Values.trialRbac.create (or (eq (toString $p) "true") (and (eq (toString $p) "auto") (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"))) }}true{{- end }}
{{- end }}

{{/*
Whether the trial Role grants `pods: patch` ("true" or empty): only behind an enforcing policy (rendered, with Deny),
or when trialRbac.patchWithoutPolicy says every trial is trusted.
*/}}
{{- define "kubetune.trialPatch" -}}
{{- if or .Values.trialRbac.patchWithoutPolicy (and (include "kubetune.trialPolicy" .) (has "Deny" .Values.trialRbac.admissionPolicy.validationActions)) }}true{{- end }}
{{- end }}

{{/*
The leader-election Lease's name.
*/}}
{{- define "kubetune.leaseName" -}}
{{- default (include "kubetune.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The operator's rules inside a watched namespace (a Role in namespaced mode, part of the ClusterRole otherwise).
*/}}
{{- define "kubetune.namespacedRules" -}}
- apiGroups: ["kubetune.io"]
  resources: ["tuningexperiments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["kubetune.io"]
  resources: ["tuningexperiments/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
