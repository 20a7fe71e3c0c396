{{/* Names, labels, images and the environment every pod of the chart shares. */}}

{{- define "ipfvr.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ipfvr.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: ipfvr
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The labels of one component's objects: (dict "root" $ "component" "ipfvr-api") */}}
{{- define "ipfvr.componentLabels" -}}
{{ include "ipfvr.labels" .root }}
app.kubernetes.io/name: {{ .component }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "ipfvr-api") */}}
{{- define "ipfvr.selector" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "ipfvr.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "ipfvr.secretName" -}}
{{- default (printf "%s-secrets" (include "ipfvr.fullname" .)) .Values.secretKey.existingSecret -}}
{{- end -}}

{{/* The settings (ConfigMap) and secrets of every container; Redis and S3 secrets only where they exist. */}}
{{- define "ipfvr.envFrom" -}}
- configMapRef: {name: {{ include "ipfvr.fullname" . }}-config}
- secretRef: {name: {{ include "ipfvr.secretName" . }}}
{{- with .Values.redis.existingSecret }}
- secretRef: {name: {{ . }}}
{{- end }}
{{- if and .Values.s3.existingSecret (ne .Values.s3.existingSecret .Values.secretKey.existingSecret) }}
- secretRef: {name: {{ .Values.s3.existingSecret }}}
{{- end }}
{{- end -}}

{{- define "ipfvr.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" .Release.Name -}}
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{- define "ipfvr.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* nodeSelector, tolerations and affinity of a pod spec, from one values block. */}}
{{- define "ipfvr.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The bundled MinIO's credentials, read from the Secret its subchart makes. */}}
{{- define "ipfvr.env" -}}
{{- if .Values.minio.enabled }}
- name: IPFVR_S3_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ .Release.Name }}-minio, key: rootUser}}
- name: IPFVR_S3_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ .Release.Name }}-minio, key: rootPassword}}
{{- end }}
{{- end -}}
