{{/* The chart's name. */}}
{{- define "coxswain-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects (also the prefix of its ClusterRoles). */}}
{{- define "coxswain-agent.fullname" -}}
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

{{- define "coxswain-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "coxswain-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coxswain-agent.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "coxswain-agent.labels" -}}
helm.sh/chart: {{ include "coxswain-agent.chart" . | quote }}
{{ include "coxswain-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/part-of: coxswain
{{- end }}

{{- define "coxswain-agent.serviceAccountName" -}}
{{- default (include "coxswain-agent.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The cluster's name, required and checked like the agent checks it (DNS-1123 label). */}}
{{- define "coxswain-agent.clusterName" -}}
{{- $name := required "cluster.name is required: the cluster's name, e.g. --set cluster.name=prod-east" .Values.cluster.name }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" $name) }}
{{- fail (printf "cluster.name %q is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{/* cluster.labels as COXSWAIN_LABELS: key=value,... sorted by key; `env` is required. */}}
{{- define "coxswain-agent.clusterLabels" -}}
{{- if not (get (default (dict) .Values.cluster.labels) "env") }}
{{- fail "cluster.labels.env is required (the environment of this cluster, e.g. --set cluster.labels.env=prod)" }}
{{- end }}
{{- $pairs := list }}
{{- range $key, $value := .Values.cluster.labels }}
{{- if ne (toString $value) "" }}
{{- $pairs = append $pairs (printf "%s=%s" $key (toString $value)) }}
{{- end }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* The Secret holding the agent's nkey seed. */}}
{{- define "coxswain-agent.natsSecretName" -}}
{{- if .Values.nats.existingSecret }}
{{- .Values.nats.existingSecret }}
{{- else if .Values.nats.nkey }}
{{- printf "%s-nats" (include "coxswain-agent.fullname" .) }}
{{- else }}
{{- fail "set nats.existingSecret (a Secret with the agent's nkey seed, preferred) or nats.nkey (--set-file nats.nkey=agent-<cluster>.nk)" }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding the trusted public signing key. */}}
{{- define "coxswain-agent.trustConfigMapName" -}}
{{- if .Values.trust.existingConfigMap }}
{{- .Values.trust.existingConfigMap }}
{{- else if .Values.trust.publicKey }}
{{- printf "%s-trust" (include "coxswain-agent.fullname" .) }}
{{- else }}
{{- fail "set trust.publicKey (--set-file trust.publicKey=signing.pub) or trust.existingConfigMap: the agent accepts only intents signed by the coordinator" }}
{{- end }}
{{- end }}

{{/* The kinds of allowClusterKinds, comma separated. */}}
{{- define "coxswain-agent.clusterKinds" -}}
{{- $kinds := list }}
{{- range .Values.allowClusterKinds }}
{{- $kinds = append $kinds (required "each allowClusterKinds entry needs a kind" .kind) }}
{{- end }}
{{- join "," $kinds }}
{{- end }}
