{{/* Names and labels, shared by every template. */}}

{{- define "digits.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "digits.fullname" -}}
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

{{- define "digits.selectorLabels" -}}
app.kubernetes.io/name: {{ include "digits.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "digits.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "digits.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: digits-serving
{{- end }}

{{- define "digits.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "digits.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, with the GPU suffix when gpu.enabled. */}}
{{- define "digits.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.gpu.enabled }}{{ $tag = printf "%s%s" $tag .Values.gpu.imageTagSuffix }}{{ end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* The model store path inside the container. */}}
{{- define "digits.modelStore" -}}
{{- if eq .Values.models.source "pvc" }}/models{{ else }}/app/model_store{{ end }}
{{- end }}

{{- define "digits.modelsClaim" -}}
{{- default (printf "%s-models" (include "digits.fullname" .)) .Values.models.pvc.existingClaim }}
{{- end }}

{{/*
One settings value as an environment string. Helm reads numbers from values as float64, which
`toString` would print as 3.3554432e+07, so whole numbers are printed as integers; lists are
JSON, as pydantic-settings expects for list settings.
*/}}
{{- define "digits.envValue" -}}
{{- $v := . }}
{{- if kindIs "slice" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ ternary "true" "false" $v }}
{{- else if and (kindIs "float64" $v) (eq (float64 (int64 $v)) $v) }}{{ int64 $v }}
{{- else }}{{ toString $v }}
{{- end }}
{{- end }}

{{/* Seconds between SIGTERM being due and SIGKILL: preStop sleep + drain + margin. */}}
{{- define "digits.terminationGracePeriod" -}}
{{- $drain := add (int64 .Values.lifecycle.preStopSleepSeconds) (ceil .Values.settings.gracePeriodS | int64) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $drain 10 }}
{{- else if le (int64 .Values.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than lifecycle.preStopSleepSeconds + settings.gracePeriodS (%d), or the drain is cut short by SIGKILL" .Values.terminationGracePeriodSeconds $drain) }}
{{- else }}
{{- int64 .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
A probe's action: grpc.health.v1 on the gRPC port, or the KServe V2 health routes on the HTTP
port (a model's readiness at /v2/models/<name>/ready). Liveness over HTTP is the server's: it
has no per-service form.
*/}}
{{- define "digits.probe" -}}
{{- if eq .protocol "http" -}}
httpGet:
  port: http
  path: {{ if and (eq .kind "ready") .service }}{{ printf "/v2/models/%s/ready" .service }}{{ else }}{{ printf "/v2/health/%s" .kind }}{{ end }}
{{- else -}}
grpc:
  port: 8001
  service: {{ .service | quote }}
{{- end -}}
{{- end }}
