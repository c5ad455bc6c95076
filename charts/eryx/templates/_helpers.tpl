{{/* Names, truncated to Kubernetes' 63-character label limit. */}}
{{- define "eryx.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "eryx.fullname" -}}
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

{{/* The in-chart NATS server's name (leaves room for the StatefulSet's pod suffix). */}}
{{- define "eryx.natsName" -}}
{{- printf "%s-nats" (include "eryx.fullname" . | trunc 50 | trimSuffix "-") }}
{{- end }}

{{- define "eryx.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object gets besides the selector ones. */}}
{{- define "eryx.commonLabels" -}}
helm.sh/chart: {{ include "eryx.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: eryx
{{- end }}

{{- define "eryx.labels" -}}
app.kubernetes.io/name: {{ include "eryx.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "eryx.commonLabels" . }}
{{- end }}

{{/* Selector labels: immutable on a Deployment, so never add to them. */}}
{{- define "eryx.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eryx.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "eryx.natsSelectorLabels" -}}
app.kubernetes.io/name: {{ include "eryx.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: nats
{{- end }}

{{- define "eryx.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eryx.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "eryx.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The Secret holding NATS credentials: the user's, or the chart's. */}}
{{- define "eryx.natsSecretName" -}}
{{- default (printf "%s-nats-auth" (include "eryx.fullname" .)) .Values.nats.auth.existingSecret }}
{{- end }}

{{/* The NATS server URL(s), without credentials; empty: embedded mode. */}}
{{- define "eryx.natsURL" -}}
{{- if .Values.nats.enabled }}
{{- printf "nats://%s.%s.svc:4222" (include "eryx.natsName" .) .Release.Namespace }}
{{- else }}
{{- .Values.nats.url }}
{{- end }}
{{- end }}

{{/*
The URL(s) the worker connects with. The worker reads a .creds file
(ERYX_NATS_CREDS) but takes a token or user/password only inside the URL,
so those are spliced into each URL as $(VAR) references that the kubelet
expands from the Secret-sourced variables defined before ERYX_NATS_URL: the
secret never appears in the pod spec.
*/}}
{{- define "eryx.natsConnectURL" -}}
{{- $mode := .Values.nats.auth.mode }}
{{- $cred := "" }}
{{- if eq $mode "token" }}{{ $cred = "$(ERYX_NATS_TOKEN)@" }}
{{- else if eq $mode "userPassword" }}{{ $cred = "$(ERYX_NATS_USER):$(ERYX_NATS_PASSWORD)@" }}
{{- end }}
{{- $urls := list }}
{{- range splitList "," (include "eryx.natsURL" .) }}
{{- $u := splitn "://" 2 (trim .) }}
{{- $urls = append $urls (printf "%s://%s%s" $u._0 $cred $u._1) }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{/* Embedded mode: each pod would run its own NATS, i.e. its own queue. */}}
{{- define "eryx.checkEmbedded" -}}
{{- if not (include "eryx.natsURL" .) }}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- fail "nats.url is empty (embedded NATS in the worker), which only works with one pod: set nats.url, or nats.enabled=true, or replicaCount=1 with autoscaling.enabled=false" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Timing: exec timeout < drain timeout < termination grace period. */}}
{{- define "eryx.drainTimeout" -}}
{{- $exec := int .Values.worker.execTimeoutSeconds }}
{{- $drain := int .Values.worker.drainTimeoutSeconds }}
{{- if eq $drain 0 }}{{ $drain = add $exec 10 }}{{ end }}
{{- if le $drain $exec }}
{{- fail (printf "worker.drainTimeoutSeconds (%d) must exceed worker.execTimeoutSeconds (%d) so running jobs can finish while draining" $drain $exec) }}
{{- end }}
{{- $drain }}
{{- end }}

{{- define "eryx.terminationGrace" -}}
{{- $drain := int (include "eryx.drainTimeout" .) }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- if eq $grace 0 }}{{ $grace = add $drain 20 }}{{ end }}
{{- if le $grace $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed the drain timeout (%d), or Kubernetes kills workers mid-drain" $grace $drain) }}
{{- end }}
{{- $grace }}
{{- end }}

{{/*
The worker's environment. Every ERYX_* name the chart sets is here, so a
renamed variable is a one-line change (docs/configuration.md lists them).
*/}}
{{- define "eryx.workerEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: ERYX_WORKER_ID
  value: "$(POD_NAME)"
{{- $auth := .Values.nats.auth }}
{{- if eq $auth.mode "token" }}
- name: ERYX_NATS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "eryx.natsSecretName" . }}
      key: {{ $auth.secretKeys.token }}
{{- else if eq $auth.mode "userPassword" }}
- name: ERYX_NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ include "eryx.natsSecretName" . }}
      key: {{ $auth.secretKeys.user }}
- name: ERYX_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "eryx.natsSecretName" . }}
      key: {{ $auth.secretKeys.password }}
{{- else if eq $auth.mode "creds" }}
- name: ERYX_NATS_CREDS
  value: /etc/eryx/nats/nats.creds
{{- end }}
{{- if include "eryx.natsURL" . }}
- name: ERYX_NATS_URL
  value: {{ include "eryx.natsConnectURL" . | quote }}
{{- end }}
- name: ERYX_SUBJECT_PREFIX
  value: {{ .Values.worker.subjectPrefix | quote }}
- name: ERYX_REPLICAS
  value: {{ .Values.worker.streamReplicas | quote }}
{{- with .Values.worker.embeddedListen }}
- name: ERYX_EMBEDDED_LISTEN
  value: {{ . | quote }}
{{- end }}
- name: ERYX_DATA_DIR
  value: {{ .Values.worker.dataDir | quote }}
- name: ERYX_CACHE_DIR
  value: {{ printf "%s/cache" (trimSuffix "/" .Values.worker.dataDir) | quote }}
- name: ERYX_QUEUE
  value: {{ .Values.worker.queue | quote }}
- name: ERYX_POOL_SIZE
  value: {{ .Values.worker.poolSize | quote }}
- name: ERYX_EXEC_TIMEOUT
  value: {{ printf "%ds" (int .Values.worker.execTimeoutSeconds) | quote }}
- name: ERYX_DRAIN_TIMEOUT
  value: {{ printf "%ss" (include "eryx.drainTimeout" .) | quote }}
- name: ERYX_MEMORY_LIMIT
  value: {{ .Values.worker.memoryLimit | quote }}
- name: ERYX_METRICS_LISTEN
  value: {{ printf ":%d" (int .Values.worker.metricsPort) | quote }}
- name: ERYX_LOG_LEVEL
  value: {{ .Values.worker.logLevel | quote }}
- name: ERYX_LOG_FORMAT
  value: {{ .Values.worker.logFormat | quote }}
- name: ERYX_NET_ALLOW_HOSTS
  value: {{ join "," .Values.network.allowHosts | quote }}
- name: ERYX_NET_ALLOW_PORTS
  value: {{ join "," .Values.network.allowPorts | quote }}
- name: ERYX_NET_MAX_CONNECTIONS
  value: {{ .Values.network.maxConnections | quote }}
{{- range $name, $key := dict "ERYX_NET_CONNECT_TIMEOUT" "connectTimeout" "ERYX_NET_IO_TIMEOUT" "ioTimeout" "ERYX_NET_MAX_BYTES_IN" "maxBytesIn" "ERYX_NET_MAX_BYTES_OUT" "maxBytesOut" }}
{{- with index $.Values.network $key }}
- name: {{ $name }}
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if .Values.network.allowPrivate }}
- name: ERYX_NET_ALLOW_PRIVATE
  value: "true"
{{- end }}
{{- if .Values.network.extraCA.secretName }}
- name: ERYX_NET_EXTRA_CA_FILE
  value: {{ printf "/etc/eryx/ca/%s" .Values.network.extraCA.key | quote }}
{{- end }}
{{- with .Values.otel }}
{{- if .endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .protocol | quote }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: {{ .serviceName | quote }}
{{- if .sampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .sampler | quote }}
{{- end }}
{{- if .samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .samplerArg | quote }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),k8s.node.name=$(NODE_NAME)%s" (ternary (printf ",%s" .resourceAttributes) "" (ne .resourceAttributes "")) | quote }}
{{- end }}
{{- with .Values.worker.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The Secret holding eryx-auth's password and issuer seed. */}}
{{- define "eryx.authSecretName" -}}
{{- default (printf "%s-auth" (include "eryx.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/*
eryx-auth's permissions as a nats-server block: the same text as
auth.RenderConfig(auth.AuthServicePermissions(prefix), indent), which
charts_test.go checks.
*/}}
{{- define "eryx.authPermissions" -}}
{{- $p := .Values.worker.subjectPrefix }}
{{- $b := printf "%s_AUTH" (upper (replace "." "_" $p)) }}
{{- $st := printf "KV_%s" $b }}
{{- $pub := list (printf "$KV.%s.>" $b) "$JS.API.INFO" (printf "$JS.API.STREAM.MSG.DELETE.%s" $st) (printf "$JS.API.STREAM.PURGE.%s" $st) }}
{{- range list "STREAM.CREATE" "STREAM.UPDATE" "STREAM.INFO" "STREAM.MSG.GET" "DIRECT.GET" }}
{{- $pub = append $pub (printf "$JS.API.%s.%s" . $st) }}
{{- end }}
{{- $pub = append $pub (printf "$JS.API.DIRECT.GET.%s.>" $st) }}
{{- $pub = append $pub (printf "$JS.API.CONSUMER.CREATE.%s.*" $st) }}
{{- $pub = append $pub (printf "$JS.API.CONSUMER.CREATE.%s.*.>" $st) }}
{{- range list "INFO" "MSG.NEXT" "DELETE" }}
{{- $pub = append $pub (printf "$JS.API.CONSUMER.%s.%s.*" . $st) }}
{{- end }}
{{- range list "CREATE" "UPDATE" "INFO" }}
{{- $pub = append $pub (printf "$JS.API.STREAM.%s.*" .) }}
{{- end }}
{{- $sub := list "$SYS.REQ.USER.AUTH" (printf "_INBOX.%s.auth.>" $p) }}
permissions {
  publish {
    allow: [{{ range $i, $s := $pub }}{{ if $i }}, {{ end }}"{{ $s }}"{{ end }}]
    deny: ["$JS.EVENT.>"]
  }
  subscribe {
    allow: [{{ range $i, $s := $sub }}{{ if $i }}, {{ end }}"{{ $s }}"{{ end }}]
  }
  allow_responses { max: 1, expires: "2m0s" }
}
{{- end }}
