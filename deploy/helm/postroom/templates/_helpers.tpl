{{/*
Names and labels shared by every template. Variables follow one rule so that the chart's test can
check every value a template reads against values.schema.json: a value is read as
`$.Values.<path>` or through a `range`/`with` variable bound to one (`$tenant := $.Values.tenants`).
*/}}

{{- define "postroom.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The standard labels. Call with (dict "root" $ "component" "archiver" "tenant" "acme"). */}}
{{- define "postroom.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: postroom
{{ include "postroom.selectorLabels" . }}
{{- end -}}

{{- define "postroom.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .tenant }}
postroom.io/tenant: {{ .tenant }}
{{- end }}
{{- end -}}

{{- define "postroom.image" -}}
{{- printf "%s:%s" $.Values.image.repository (default $.Chart.AppVersion $.Values.image.tag) -}}
{{- end -}}

{{/* The JetStream stream prefix: the config's NATS namespace, upper-cased as @postroom/contracts does. */}}
{{- define "postroom.streamPrefix" -}}
{{- $.Values.config.nats.namespace | upper | replace "-" "_" -}}
{{- end -}}

{{/* Environment every service gets: the config file, the ops port, NATS and database URLs. */}}
{{- define "postroom.commonEnv" -}}
- name: POSTROOM_CONFIG
  value: /etc/postroom/postroom.yaml
- name: POSTROOM_HTTP_PORT
  value: {{ $.Values.ops.port | quote }}
- name: NATS_URL
  value: {{ $.Values.nats.url | quote }}
- name: LOG_LEVEL
  value: {{ $.Values.logLevel | quote }}
{{- if $.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $.Values.tracing.otlpEndpoint | quote }}
{{- end }}
{{- end -}}

{{/* DATABASE_URL from the database Secret: archiver, asd-bridge and smtp-sender only. */}}
{{- define "postroom.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.database.existingSecret }}
      key: {{ $.Values.database.urlKey }}
{{- end -}}

{{- define "postroom.probes" -}}
livenessProbe:
  httpGet: { path: /healthz, port: ops }
  periodSeconds: 10
  failureThreshold: 6
readinessProbe:
  httpGet: { path: /readyz, port: ops }
  periodSeconds: 5
  failureThreshold: 3
startupProbe:
  httpGet: { path: /healthz, port: ops }
  periodSeconds: 2
  failureThreshold: 60
{{- end -}}
