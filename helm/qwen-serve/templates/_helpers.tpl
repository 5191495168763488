{{/* Chart name, truncated for label limits. */}}
{{- define "qwen-serve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name.
Kept to 40 characters: KubeRay appends cluster and group suffixes to pod names. */}}
{{- define "qwen-serve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "qwen-serve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades, never the chart version. */}}
{{- define "qwen-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qwen-serve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "qwen-serve.labels" -}}
helm.sh/chart: {{ include "qwen-serve.chart" . }}
{{ include "qwen-serve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: qwen-serve
{{- end }}

{{- define "qwen-serve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "qwen-serve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "qwen-serve.secretName" -}}
{{- default (printf "%s-credentials" (include "qwen-serve.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "qwen-serve.cacheClaim" -}}
{{- default (printf "%s-model-cache" (include "qwen-serve.fullname" .)) .Values.modelCache.existingClaim }}
{{- end }}

{{- define "qwen-serve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* One engine rank per worker pod: {gpus: <GPUs the pod requests>, spread: <ranks on distinct
nodes>}, looked up in the tables generated from serving/replica/placement.py (_generated.tpl); the
chart computes nothing. A layout outside the tables fails here and names the check to run. */}}
{{- define "qwen-serve.rankLayout" -}}
{{- $s := .Values.settings -}}
{{- $p := $s.parallelism -}}
{{- $key := printf "%v/%v/%v/%v" $p.tp $p.pp $p.dp $p.nodes -}}
{{- $layout := get (include "qwen-serve.rankLayouts" . | fromYaml) $key -}}
{{- if not $layout }}
{{- fail (printf "settings.parallelism: tp/pp/dp/nodes = %s is not a layout the chart places (its tables hold what serving/config/validation.py accepts, up to %s): `serving config validate` names the rule it breaks; bigger nodes need a higher bound in serving/deploy/chart_helpers.py and `serving deploy helpers --write`" $key (include "qwen-serve.layoutLimits" .)) }}
{{- end }}
{{- $gpu := get (include "qwen-serve.usesGpus" . | fromYaml) (printf "%s/%s" $s.engine.kind $p.gpu_type) -}}
{{- toYaml (dict "gpus" (ternary $layout.gpus 0 $gpu) "spread" $layout.spread) }}
{{- end }}

{{/* The repo the download init container fetches: download.repo, else a repo-id model.path, else the preset's. */}}
{{- define "qwen-serve.modelRepo" -}}
{{- $m := .Values.settings.model -}}
{{- $path := default "" $m.path -}}
{{- if .Values.modelCache.download.repo }}{{ .Values.modelCache.download.repo }}
{{- else if and $path (not (hasPrefix "/" $path)) }}{{ $path }}
{{- else }}{{ get (include "qwen-serve.presetRepos" . | fromYaml) $m.preset }}
{{- end }}
{{- end }}

{{- define "qwen-serve.servedName" -}}
{{- default (get (include "qwen-serve.presetServedNames" . | fromYaml) .Values.settings.model.preset) .Values.settings.model.served_name }}
{{- end }}

{{/* Worker pods at start, in engine instances (numOfHosts pods each): initial_replicas, else Serve's own
default for it (min_replicas); the autoscaler adds the rest as Serve asks for replicas. */}}
{{- define "qwen-serve.initialReplicas" -}}
{{- $a := .Values.settings.autoscaling -}}
{{- if kindIs "invalid" $a.initial_replicas }}{{ $a.min_replicas }}{{ else }}{{ $a.initial_replicas }}{{ end }}
{{- end }}

{{/* Rules about the chart's own values that values.schema.json cannot state. Rules about the
settings tree are Python's alone (serving/config/validation.py): an invalid settings block fails
the Serve application at deploy time with the same field-naming message as
`serving config validate`, shown in the RayService status. */}}
{{- define "qwen-serve.validate" -}}
{{- $names := list }}
{{- range .Values.workerGroups }}
{{- if has .name $names }}
{{- fail (printf "workerGroups: name %q is used twice" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.host: set a host name when ingress.enabled is true" }}
{{- end }}
{{- if and .Values.modelCache.enabled .Values.modelCache.download.enabled .Values.modelCache.download.url (not .Values.modelCache.download.command) }}
{{- fail "modelCache.download.url needs modelCache.download.command (e.g. an s5cmd sync into $HF_HOME)" }}
{{- end }}
{{- if and .Values.modelCache.enabled .Values.modelCache.download.enabled (not .Values.modelCache.download.command) (not (include "qwen-serve.modelRepo" .)) }}
{{- fail "modelCache.download: no Hugging Face repo for this model; set modelCache.download.repo or disable the download" }}
{{- end }}
{{- if and .Values.secrets.existingSecret (or .Values.secrets.apiKeys .Values.secrets.tenants .Values.secrets.hfToken) }}
{{- fail "secrets: apiKeys/tenants/hfToken are ignored with existingSecret; put them in that Secret instead" }}
{{- end }}
{{- if and .Values.secrets.apiKeys .Values.secrets.tenants }}
{{- fail "secrets: give apiKeys or tenants, not both; with tenants, put each plain key's digest (printf %s \"$KEY\" | sha256sum) in a tenant's keys" }}
{{- end }}
{{- $tenantNames := list }}
{{- range .Values.secrets.tenants }}
{{- if has .name $tenantNames }}
{{- fail (printf "secrets.tenants: name %q is used twice" .name) }}
{{- end }}
{{- $tenantNames = append $tenantNames .name }}
{{- end }}
{{- end }}

{{/* serveConfigV2: the settings block, passed through to serving.app:app_builder, which derives
every Serve option (placement, autoscaling, health, drain) at deploy time. The only Kubernetes fact
added: the gateway asks for a resource that only the GPU-less head pod advertises. Must equal
serving.deploy.serve_config(settings); a test compares them for every profile. */}}
{{- define "qwen-serve.serveConfig" -}}
{{- $d := include "qwen-serve.settingDefaults" . | fromYaml -}}
{{- $s := mergeOverwrite $d (deepCopy .Values.settings) -}}
{{- $args := dict "settings" .Values.settings "gateway_resources" (dict (include "qwen-serve.gatewayResource" .) 1) -}}
{{- $app := dict "name" $s.ray.app_name "route_prefix" "/" "import_path" "serving.app:app_builder" "args" $args -}}
{{- $cfg := dict "proxy_location" "HeadOnly" "http_options" (dict "host" "0.0.0.0" "port" $s.gateway.port) "applications" (list $app) -}}
{{- toYaml $cfg }}
{{- end }}

{{/* Environment that selects how clients reach the gateway (settings.gateway.ingress) and, on the
direct and HAProxy paths, runs replica user code on the replica's own event loop; Serve reads it at
import time, so every Ray container gets it. The table is generated from serving/gateway/ingress.py. */}}
{{- define "qwen-serve.ingressEnv" -}}
{{- $d := include "qwen-serve.settingDefaults" . | fromYaml -}}
{{- $s := mergeOverwrite $d (deepCopy .Values.settings) -}}
{{- with get (include "qwen-serve.ingressEnvByPath" . | fromYaml) $s.gateway.ingress }}
{{ toYaml . }}
{{- end }}
{{- end -}}
