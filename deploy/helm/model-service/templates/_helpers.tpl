{{/* Names, labels, images and the environment every service shares. */}}

{{- define "ms.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ms.name" -}}
{{- printf "%s-%s" (include "ms.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ms.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ms.labels" -}}
{{ include "ms.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* repository@digest when a digest is given, else repository:tag. */}}
{{- define "ms.imageRef" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}

{{- define "ms.image" -}}
image: {{ include "ms.imageRef" .Values.image | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- end -}}

{{- define "ms.authSecret" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "ms.fullname" .)) -}}
{{- end -}}

{{- define "ms.minioSecret" -}}
{{- .Values.store.minio.existingSecret | default (printf "%s-minio" (include "ms.fullname" .)) -}}
{{- end -}}

{{- define "ms.url" -}}
{{- printf "http://%s:%d" (include "ms.name" (dict "root" .root "component" .component)) (int .port) -}}
{{- end -}}

{{- define "ms.redisUrl" -}}
{{- if .Values.sharedState.externalUrl -}}
{{- .Values.sharedState.externalUrl -}}
{{- else -}}
{{- printf "redis://%s:6379/0" (include "ms.name" (dict "root" . "component" "valkey")) -}}
{{- end -}}
{{- end -}}

{{/* What every platform process reads: the environment kind and its home... */}}
{{- define "ms.baseEnv" -}}
- name: MODEL_SERVICE_ENV
  value: {{ .Values.environment | quote }}
- name: MODEL_SERVICE_HOME
  value: /data
- name: HOME   # the root file system is read-only; library caches go to the pod's /tmp
  value: /tmp
{{- end -}}

{{/* ...and, for every service (not the init step), the API-key settings. */}}
{{- define "ms.commonEnv" -}}
{{ include "ms.baseEnv" . }}
- name: MODEL_SERVICE_AUTH
  value: {{ .Values.auth.enabled | quote }}
{{- if .Values.auth.enabled }}
- name: MODEL_SERVICE_ADMIN_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "ms.authSecret" . }}, key: admin-key}
- name: MODEL_SERVICE_SERVICE_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "ms.authSecret" . }}, key: service-token}
{{- end }}
{{- end -}}

{{/* The store (MODEL_REGISTRY_*, MINIO_*): only the model registry and the workers get its credentials. */}}
{{- define "ms.storeEnv" -}}
- name: MODEL_REGISTRY_STORAGE_BACKEND
  value: s3
- name: MODEL_REGISTRY_S3_BUCKET
  value: {{ .Values.store.bucket | quote }}
{{- if .Values.store.minio.enabled }}
- name: MINIO_ENDPOINT
  value: {{ printf "%s:9000" (include "ms.name" (dict "root" . "component" "minio")) | quote }}
- name: MINIO_SECURE
  value: "false"
- name: MINIO_SVC_USER
  valueFrom:
    secretKeyRef: {name: {{ include "ms.minioSecret" . }}, key: svc-user}
- name: MINIO_SVC_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "ms.minioSecret" . }}, key: svc-password}
{{- else }}
- name: MINIO_ENDPOINT
  value: {{ required "store.s3.endpoint is required when store.minio.enabled is false" .Values.store.s3.endpoint | quote }}
- name: MINIO_SECURE
  value: {{ .Values.store.s3.secure | quote }}
{{- with .Values.store.s3.region }}
- name: MINIO_REGION
  value: {{ . | quote }}
{{- end }}
- name: MINIO_SVC_USER
  valueFrom:
    secretKeyRef: {name: {{ required "store.s3.existingSecret is required for an external S3 store" .Values.store.s3.existingSecret }}, key: access-key}
- name: MINIO_SVC_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.store.s3.existingSecret }}, key: secret-key}
{{- end }}
{{- end -}}

{{- define "ms.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Non-root, read-only root file system, no privilege escalation, every capability dropped. */}}
{{- define "ms.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{- define "ms.podSpecCommon" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The gateway's name for a model type's default model: GATEWAY_DEFAULT_<KIND>_MODEL. */}}
{{- define "ms.defaultKind" -}}
{{- get (dict "llm" "CHAT" "embedding" "EMBEDDING" "transcription" "TRANSCRIPTION" "multimodal" "MULTIMODAL" "rerank" "RERANK") . -}}
{{- end -}}

{{/* Ready: /health answers 200 (a worker only once its model is loaded). Alive: the server accepts
connections; a worker still loading or a registry whose store is down is not restarted for it. */}}
{{- define "ms.probes" -}}
readinessProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: 10
  timeoutSeconds: 5
livenessProbe:
  tcpSocket: {port: http}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}

{{/* Service + Deployment of one platform process: dict root, component, port, command (list),
env (rendered YAML list), replicas, resources, data (a volume source for /data, YAML). */}}
{{- define "ms.platformService" -}}
{{- $root := .root }}
{{- $c := dict "root" $root "component" .component }}
{{- $name := include "ms.name" $c }}
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ms.labels" $c | nindent 4 }}
spec:
  type: {{ .serviceType | default "ClusterIP" }}
  selector:
    {{- include "ms.selectorLabels" $c | nindent 4 }}
  ports:
    - {name: http, port: {{ .port }}, targetPort: http}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ms.labels" $c | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ .replicas | default 1 }}
  {{- end }}
  {{- with .strategy }}
  strategy: {{ . }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "ms.selectorLabels" $c | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "ms.labels" $c | nindent 8 }}
    spec:
      {{- include "ms.podSpecCommon" $root | nindent 6 }}
      containers:
        - name: {{ .component }}
          {{- include "ms.image" $root | nindent 10 }}
          command: {{ toJson .command }}
          env:
            {{- include "ms.commonEnv" $root | nindent 12 }}
            {{- if .store }}
            {{- include "ms.storeEnv" $root | nindent 12 }}
            {{- end }}
            {{- .env | nindent 12 }}
          ports:
            - {name: http, containerPort: {{ .port }}}
          {{- include "ms.probes" $root | nindent 10 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          {{- include "ms.containerSecurity" $root | nindent 10 }}
          volumeMounts:
            - {name: data, mountPath: /data}
            - {name: tmp, mountPath: /tmp}
      volumes:
        - name: data
          {{- .data | default "emptyDir: {}" | nindent 10 }}
        - name: tmp
          emptyDir: {}
{{- end -}}
