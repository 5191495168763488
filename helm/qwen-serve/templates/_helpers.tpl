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

{{/* GPUs each worker pod (one engine rank) requests: tp × pp × dp / nodes; 0 on CPU. */}}
{{- define "qwen-serve.gpusPerRank" -}}
{{- $p := .Values.settings.parallelism -}}
{{- if eq $p.gpu_type "cpu" }}0{{ else }}{{ div (mul $p.tp $p.pp $p.dp) $p.nodes }}{{ end }}
{{- end }}

{{/* Hugging Face repo of each preset (serving/config/presets.py; a unit test keeps them equal). */}}
{{- define "qwen-serve.presetRepos" -}}
qwen3.6-27b: Qwen/Qwen3.6-27B
qwen3.6-27b-fp8: Qwen/Qwen3.6-27B-FP8
qwen3.6-35b-a3b: Qwen/Qwen3.6-35B-A3B
qwen3.6-35b-a3b-fp8: Qwen/Qwen3.6-35B-A3B-FP8
smollm2-135m: ""
qwen3-tiny: ""
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
{{- default .Values.settings.model.preset .Values.settings.model.served_name }}
{{- end }}

{{/* Worker replica bounds: the settings' autoscaling bounds (one engine instance = numOfHosts pods). */}}
{{- define "qwen-serve.initialReplicas" -}}
{{- $a := .Values.settings.autoscaling -}}
{{- if kindIs "invalid" $a.initial_replicas }}{{ $a.min_replicas }}{{ else }}{{ $a.initial_replicas }}{{ end }}
{{- end }}

{{/* Rules values.schema.json cannot state. Each names the value and what would work. */}}
{{- define "qwen-serve.validate" -}}
{{- $s := .Values.settings -}}
{{- $p := $s.parallelism -}}
{{- $a := $s.autoscaling -}}
{{- if gt (int $a.min_replicas) (int $a.max_replicas) }}
{{- fail (printf "settings.autoscaling.min_replicas (%v) is above settings.autoscaling.max_replicas (%v)" $a.min_replicas $a.max_replicas) }}
{{- end }}
{{- if not (kindIs "invalid" $a.initial_replicas) }}
{{- if or (lt (int $a.initial_replicas) (int $a.min_replicas)) (gt (int $a.initial_replicas) (int $a.max_replicas)) }}
{{- fail (printf "settings.autoscaling.initial_replicas (%v) must lie in [min_replicas, max_replicas] = [%v, %v]" $a.initial_replicas $a.min_replicas $a.max_replicas) }}
{{- end }}
{{- end }}
{{- if mod (mul $p.tp $p.pp) $p.nodes }}
{{- fail (printf "settings.parallelism.nodes (%v) must divide tp × pp = %v: every node holds the same number of ranks" $p.nodes (mul $p.tp $p.pp)) }}
{{- end }}
{{- $gpus := include "qwen-serve.gpusPerRank" . | int }}
{{- if gt $gpus (int $p.gpus_per_node) }}
{{- fail (printf "settings.parallelism: each node needs %d GPUs (tp × pp × dp / nodes) but gpus_per_node is %v; raise nodes or lower tp/pp" $gpus $p.gpus_per_node) }}
{{- end }}
{{- if and (eq $s.engine.kind "llamacpp") (ne $p.gpu_type "cpu") }}
{{- fail "settings.engine.kind=llamacpp runs on CPU: set settings.parallelism.gpu_type=cpu" }}
{{- end }}
{{- if and (has $s.engine.kind (list "sglang" "vllm")) (eq $p.gpu_type "cpu") }}
{{- fail (printf "settings.engine.kind=%s needs GPUs: set settings.parallelism.gpu_type to h100, h200 or b200" $s.engine.kind) }}
{{- end }}
{{- if and (gt (int $p.nodes) 1) (gt (int $p.dp) 1) }}
{{- fail "settings.parallelism.dp > 1 across nodes is refused by SGLang: raise settings.autoscaling.max_replicas instead" }}
{{- end }}
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
{{- if and .Values.secrets.existingSecret (or .Values.secrets.apiKeys .Values.secrets.hfToken) }}
{{- fail "secrets: apiKeys/hfToken are ignored with existingSecret; put them in that Secret instead" }}
{{- end }}
{{- end }}

{{/* serveConfigV2: must equal serving.deploy.serve_config(settings), which takes the deployment
options from the builders in code (serving/replica/deployment.py, serving/gateway/deployment.py);
a test compares them for every profile. */}}
{{- define "qwen-serve.serveConfig" -}}
{{- $s := .Values.settings -}}
{{- $p := $s.parallelism -}}
{{- $a := $s.autoscaling -}}
{{- $r := $s.replica -}}
{{- $gpus := include "qwen-serve.gpusPerRank" . | int -}}
{{- $bundle := dict "CPU" $p.cpus_per_rank -}}
{{- if gt $gpus 0 }}{{- $_ := set $bundle "GPU" (float64 $gpus) }}{{- end }}
{{- $bundles := list -}}
{{- range until (int $p.nodes) }}{{- $bundles = append $bundles $bundle }}{{- end }}
{{- $autoscaling := dict "min_replicas" $a.min_replicas "max_replicas" $a.max_replicas "target_ongoing_requests" $a.target_load_per_replica "upscale_delay_s" $a.upscale_delay_s "downscale_delay_s" $a.downscale_delay_s "metrics_interval_s" $a.metrics_interval_s "look_back_period_s" $a.look_back_period_s "policy" (dict "policy_function" "serving.replica.autoscaling:engine_load_policy") -}}
{{- if not (kindIs "invalid" $a.initial_replicas) }}{{- $_ := set $autoscaling "initial_replicas" $a.initial_replicas }}{{- end }}
{{- /* graceful shutdown: drain + SIGTERM→SIGKILL grace (10 s) + 10 s slack, as the replica computes it */ -}}
{{- $engine := dict "name" "EngineReplica" "placement_group_bundles" $bundles "placement_group_strategy" (ternary "STRICT_SPREAD" "STRICT_PACK" (gt (int $p.nodes) 1)) "ray_actor_options" (dict "num_cpus" $p.cpus_per_rank "num_gpus" (float64 $gpus)) "autoscaling_config" $autoscaling "health_check_period_s" $r.health_check_period_s "health_check_timeout_s" $r.health_check_timeout_s "graceful_shutdown_timeout_s" (addf $r.drain_grace_s 20) "graceful_shutdown_wait_loop_s" 0.5 "max_ongoing_requests" 64 -}}
{{- $gateway := dict "name" "gateway" "num_replicas" $s.gateway.replicas "max_ongoing_requests" (add $s.gateway.limits.max_in_flight 16) "ray_actor_options" (dict "num_cpus" 0.5 "resources" (dict "qwen_serve_gateway" 1)) "health_check_period_s" 10.0 "graceful_shutdown_timeout_s" $r.drain_grace_s -}}
{{- $app := dict "name" (dig "ray" "app_name" "qwen-serve" $s) "route_prefix" "/" "import_path" "serving.app:app_builder" "args" (dict "settings" $s) "deployments" (list $gateway $engine) -}}
{{- $cfg := dict "proxy_location" "HeadOnly" "http_options" (dict "host" "0.0.0.0" "port" $s.gateway.port) "applications" (list $app) -}}
{{- toYaml $cfg }}
{{- end }}

{{/*
Environment that selects how clients reach the gateway (settings.gateway.ingress) and, on the direct
and HAProxy paths, runs replica user code on the replica's own event loop; Serve reads it at import
time, so every Ray container gets it. Mirrors serving/gateway/ingress.py (a test compares).
*/}}
{{- define "qwen-serve.ingressEnv" -}}
{{- $ingress := "haproxy" -}}
{{- with .Values.settings.gateway }}{{ with .ingress }}{{ $ingress = . }}{{ end }}{{ end -}}
{{- if eq $ingress "haproxy" }}
- {name: RAY_SERVE_ENABLE_HA_PROXY, value: "1"}
- {name: RAY_SERVE_ENABLE_DIRECT_INGRESS, value: "1"}
{{- else if eq $ingress "direct" }}
- {name: RAY_SERVE_ENABLE_DIRECT_INGRESS, value: "1"}
{{- end }}
{{- if or (eq $ingress "haproxy") (eq $ingress "direct") }}
- {name: RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD, value: "0"}
{{- end }}
{{- end -}}
