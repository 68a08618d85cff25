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
{{- /* name and instance come from selectorLabels below: writing them here too made every
  object carry duplicate keys, which strict YAML parsers reject. */}}
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
- name: POSTROOM_HTTP_HOST
  value: {{ $.Values.ops.host | default "0.0.0.0" | quote }}
- name: NATS_URL
  value: {{ $.Values.nats.url | quote }}
- name: LOG_LEVEL
  value: {{ $.Values.logLevel | quote }}
{{- if $.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $.Values.tracing.otlpEndpoint | quote }}
{{- end }}
{{- end -}}

{{/*
The Deployment's own NATS user and its password from the NATS users Secret (keys: user names).
The users and their least-privilege permissions for the NATS chart are generated from
@postroom/contracts: pnpm --filter @postroom/runtime nats-auth --per-tenant --helm postroom.yaml
*/}}
{{- define "postroom.natsUserEnv" -}}
- name: NATS_USER
  value: {{ .user | quote }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .user | quote }}
{{- end -}}

{{/* The services' group-role prefix, as the set-up Job reads it from the config (default postroom_). */}}
{{- define "postroom.rolePrefix" -}}
{{- default "postroom_" $.Values.config.database.rolePrefix -}}
{{- end -}}

{{/*
A database service's PostgreSQL connection; call with (dict "database" $.Values.database "prefix"
(include "postroom.rolePrefix" $) "service" "archiver"). With database.roles.enabled: its own
login user <prefix><service>_login on database.roles.url (no credentials in it), its password
from database.roles.existingSecret (key = service name) — the owner's URL never reaches the pod.
Without: the owner's URL from the database Secret, shared by every service, which then migrate.
*/}}
{{- define "postroom.databaseEnv" -}}
{{- if .database.roles.enabled -}}
- name: DATABASE_URL
  value: {{ .database.roles.url | quote }}
- name: DATABASE_USER
  value: {{ printf "%s%s_login" .prefix (.service | replace "-" "_") | quote }}
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .database.roles.existingSecret }}
      key: {{ .service | quote }}
{{- else -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .database.existingSecret }}
      key: {{ .database.urlKey }}
{{- end }}
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
