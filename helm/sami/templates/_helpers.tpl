{{/* Names: the full name prefixes every object; suffixed names stay within 63 characters. */}}
{{- define "sami.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sami.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<suffix>" within 63 characters: call with (list . "suffix"). */}}
{{- define "sami.component" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $base := include "sami.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base $suffix -}}
{{- end -}}

{{- define "sami.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: call with (list . "component"). */}}
{{- define "sami.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "sami.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "sami.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "sami.chart" $root }}
{{ include "sami.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sami
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- end -}}

{{- define "sami.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}

{{- define "sami.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sami.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret the Sami processes read: the operator's own, or the chart's. */}}
{{- define "sami.secretName" -}}
{{- default (include "sami.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "sami.postgresql.host" -}}
{{- include "sami.component" (list . "postgresql") -}}
{{- end -}}

{{- define "sami.postgresql.secretName" -}}
{{- default (include "sami.component" (list . "postgresql")) .Values.postgresql.auth.existingSecret -}}
{{- end -}}

{{- define "sami.redis.url" -}}
{{- printf "redis://%s:6379/0" (include "sami.component" (list . "redis")) -}}
{{- end -}}

{{/* SAMI_PUBLIC_URL: the value, else the first ingress host (https when TLS lists it). */}}
{{- define "sami.publicUrl" -}}
{{- if .Values.config.publicUrl -}}
{{- .Values.config.publicUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- $host := (first .Values.ingress.hosts).host -}}
{{- $scheme := "http" -}}
{{- range .Values.ingress.tls -}}
{{- if has $host (.hosts | default list) -}}
{{- $scheme = "https" -}}
{{- end -}}
{{- end -}}
{{- printf "%s://%s" $scheme $host -}}
{{- end -}}
{{- end -}}

{{/*
A generated secret value, base64-encoded: the one already in Secret $name under $key (so an
upgrade keeps it), else a new random one. `helm template` cannot look a Secret up and makes a
new value every time. Call with (list . name key).
*/}}
{{- define "sami.generated" -}}
{{- $root := index . 0 -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace (index . 1) -}}
{{- $data := dig "data" (dict) $existing -}}
{{- if hasKey $data (index . 2) -}}
{{- index $data (index . 2) -}}
{{- else -}}
{{- randAlphaNum 48 | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Pod-level fields every Sami pod shares. */}}
{{- define "sami.podCommon" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Environment of every Sami container: the ConfigMap, the Secret, then what the chart composes
(the bundled databases' URLs, the instance dir) and extraEnv. Later entries win over envFrom.
*/}}
{{- define "sami.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "sami.fullname" . }}
  - secretRef:
      name: {{ include "sami.secretName" . }}
{{- end -}}

{{- define "sami.env" -}}
env:
  - name: SAMI_INSTANCE_DIR
    value: /home/sami/instance
  - name: HOME
    value: /home/sami
  - name: PYTHONDONTWRITEBYTECODE
    value: "1"
{{- if .Values.postgresql.enabled }}
  {{- include "sami.databaseEnv" . | nindent 2 }}
{{- end }}
{{- if .Values.redis.enabled }}
  - name: SAMI_REDIS_URL
    value: {{ include "sami.redis.url" . | quote }}
{{- end }}
{{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* With the bundled PostgreSQL, SAMI_DATABASE_URL is composed from its password's Secret. */}}
{{- define "sami.databaseEnv" -}}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "sami.postgresql.secretName" . }}
      key: POSTGRES_PASSWORD
- name: SAMI_DATABASE_URL
  value: {{ printf "postgresql://%s:$(POSTGRES_PASSWORD)@%s:5432/%s" .Values.postgresql.auth.username (include "sami.postgresql.host" .) .Values.postgresql.auth.database | quote }}
{{- end -}}

{{- define "sami.volumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  - name: home
    mountPath: /home/sami
{{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "sami.volumes" -}}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .Values.scratchSizeLimit }}
  - name: home
    emptyDir:
      sizeLimit: {{ .Values.scratchSizeLimit }}
{{- with .Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Rolls the pods when a setting changes: digests of the ConfigMap and of the secret values
given in values (digests only; never a value). */}}
{{- define "sami.checksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ dict "secrets" .Values.secrets "postgresql" .Values.postgresql.auth.password | toJson | sha256sum }}
{{- end }}
{{- end -}}

{{/* prometheus.io annotations of a pod whose /metrics is on port (list . PORT). */}}
{{- define "sami.scrapeAnnotations" -}}
{{- $root := index . 0 -}}
{{- if and $root.Values.metrics.podAnnotations (index . 1) }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ index . 1 | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}
