{{- define "meridian-operator.labels" -}}
app.kubernetes.io/name: meridian-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "meridian-operator.selector" -}}
app.kubernetes.io/name: meridian-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
