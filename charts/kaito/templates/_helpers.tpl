{{/* The release's base name: the release name when it already says kaito. */}}
{{- define "kaito.fullname" -}}
{{- if contains "kaito" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-kaito" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kaito.operatorName" -}}{{ include "kaito.fullname" . }}-operator{{- end -}}
{{- define "kaito.webhookService" -}}{{ include "kaito.fullname" . }}-webhook{{- end -}}
{{- define "kaito.webhookSecret" -}}{{ include "kaito.fullname" . }}-webhook-cert{{- end -}}
{{- define "kaito.webhookConfiguration" -}}{{ include "kaito.fullname" . }}-workspace-validation{{- end -}}

{{- define "kaito.serviceAccountName" -}}
{{- default (include "kaito.operatorName" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "kaito.selectorLabels" -}}
app.kubernetes.io/name: kaito
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kaito.labels" -}}
{{ include "kaito.selectorLabels" . }}
app.kubernetes.io/part-of: kaito-py
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kaito.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "kaito.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{- define "kaito.featureGates" -}}
{{- $gates := list -}}
{{- range $key, $value := .Values.featureGates -}}
{{- $gates = append $gates (printf "%s=%v" $key $value) -}}
{{- end -}}
{{- join "," $gates -}}
{{- end -}}

{{- define "kaito.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}
