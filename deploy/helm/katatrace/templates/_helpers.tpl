{{/*
Names and labels, as kata-deploy's chart makes them (its _helpers.tpl):
name and fullname truncated to 63, app.kubernetes.io/name and /instance
as the selector, helm.sh/chart and app.kubernetes.io/managed-by besides.
*/}}
{{- define "katatrace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "katatrace.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "katatrace.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "katatrace.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Selector labels of one DaemonSet's pods: .root, .component. */}}
{{- define "katatrace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "katatrace.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "katatrace.labels" -}}
helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version | replace "+" "_" }}
{{ include "katatrace.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: katatrace
{{- end }}

{{- define "katatrace.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The Secret holding the OTLP headers, or "" for none. */}}
{{- define "katatrace.headersSecret" -}}
{{- if .Values.otlp.headers.existingSecret -}}
{{ .Values.otlp.headers.existingSecret }}
{{- else if .Values.otlp.headers.value -}}
{{ include "katatrace.fullname" . }}-otlp-headers
{{- end -}}
{{- end }}

{{/*
Checks the values together, which the schema cannot: fails the render
with what is wrong.
*/}}
{{- define "katatrace.validate" -}}
{{- $drain := .Values.drainTimeout | toString -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(ms|s|m)$" $drain) -}}
{{- fail (printf "drainTimeout %q: want a duration such as 5s, 500ms or 1m" $drain) -}}
{{- end -}}
{{- $secs := 0.0 -}}
{{- if hasSuffix "ms" $drain -}}{{- $secs = divf (trimSuffix "ms" $drain | float64) 1000 -}}
{{- else if hasSuffix "s" $drain -}}{{- $secs = trimSuffix "s" $drain | float64 -}}
{{- else -}}{{- $secs = mulf (trimSuffix "m" $drain | float64) 60 -}}{{- end -}}
{{- if le (.Values.terminationGracePeriodSeconds | float64) $secs -}}
{{- fail (printf "terminationGracePeriodSeconds %v must be longer than drainTimeout %s: the kubelet would kill a stop still sending what guests sent" .Values.terminationGracePeriodSeconds $drain) -}}
{{- end -}}
{{- if and .Values.otlp.ca.secretName .Values.otlp.ca.configMapName -}}
{{- fail "otlp.ca: give secretName or configMapName, not both" -}}
{{- end -}}
{{- if and (or .Values.otlp.ca.secretName .Values.otlp.ca.configMapName) (not (regexMatch "^(otlps|otlphttps)://" .Values.to)) -}}
{{- fail (printf "otlp.ca is for an OTLP destination over TLS (otlps://, otlphttps://), and to is %q" .Values.to) -}}
{{- end -}}
{{- if and .Values.otlp.headers.existingSecret .Values.otlp.headers.value -}}
{{- fail "otlp.headers: give existingSecret or value, not both" -}}
{{- end -}}
{{- end }}

{{/*
--from for a role's port: vsock (left out where the seccomp profile
refuses AF_VSOCK) and a hybrid-vsock socket beside each VM's, for every
hypervisor of both runtimes: kata-trace-forwarder.service's set, and
share/katatrace/hybrid-vsock.conf's for the 1.x relays. .root, .port.
*/}}
{{- define "katatrace.from" -}}
{{- if ne .root.Values.seccomp.profile "RuntimeDefault" }}
- --from=vsock://any:{{ .port }}
{{- end }}
- --from=unix:///run/vc/firecracker/*/root/kata.hvsock_{{ .port }}
- --from=unix:///run/vc/vm/*/clh.sock_{{ .port }}
- --from=unix:///run/kata/*/root/kata.hvsock_{{ .port }}
- --from=unix:///run/kata/*/ch-vm.sock_{{ .port }}
- --from=unix:///run/kata/firecracker/*/root/kata.hvsock_{{ .port }}
- --from=unix:///run/kata/*/kata.hvsock_{{ .port }}
- --from=unix:///run/kata/*/vsock.sock_{{ .port }}
{{- end }}

{{/*
A host role's container: .root, .role (its name: the image's link
/usr/bin/ROLE and the handover socket's), .name (the container's),
.port (the guests' vsock port), .metricsPort, .to ("" for none),
.extraArgs, .resources.
*/}}
{{- define "katatrace.container" -}}
{{- $v := .root.Values -}}
{{- /* The OTLP options go only to a role sending OTLP (the text relay
       would refuse them), the CA only over TLS. */ -}}
{{- $otlp := regexMatch "^otlp(s|http|https)?://" (.to | default "") -}}
{{- $ca := and (or $v.otlp.ca.secretName $v.otlp.ca.configMapName) (regexMatch "^(otlps|otlphttps)://" (.to | default "")) -}}
- name: {{ .name }}
  image: {{ include "katatrace.image" .root }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  command:
    - /usr/bin/{{ .role }}
  args:
    {{- include "katatrace.from" . | trim | nindent 4 }}
    {{- with .to }}
    - --to={{ . }}
    {{- end }}
    - --metrics-listen=tcp://:{{ .metricsPort }}
    - --handover-socket={{ $v.handover.hostDir }}/{{ .role }}.sock
    {{- if $v.hostProc }}
    - --host-proc=/host/proc
    {{- end }}
    - --drain-timeout={{ $v.drainTimeout }}
    {{- if $ca }}
    - --otlp-ca-file=/etc/katatrace/otlp-ca/{{ $v.otlp.ca.key }}
    {{- end }}
    {{- range .extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: KATATRACE_LOG_FORMAT
      value: {{ $v.logFormat | quote }}
    # $(HOST_IP) in --to: the node's address.
    - name: HOST_IP
      valueFrom:
        fieldRef:
          fieldPath: status.hostIP
    {{- with and $otlp (include "katatrace.headersSecret" .root) }}
    - name: {{ $v.otlp.headers.env }}
      valueFrom:
        secretKeyRef:
          name: {{ . }}
          key: {{ $v.otlp.headers.key }}
    {{- end }}
  ports:
    - name: {{ .portName }}
      containerPort: {{ .metricsPort }}
      protocol: TCP
  # /readyz (with --handover-socket) answers 200 while the role holds
  # the node's guests: from when it serves until a new pod serves what it
  # handed over. Not its collector's state: the controller deletes an old
  # pod that is not ready at once, and its agents with it.
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ .portName }}
    periodSeconds: 5
    failureThreshold: 3
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ .portName }}
    periodSeconds: 30
    failureThreshold: 3
    timeoutSeconds: 3
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    # uid 0: Kata makes each VM's directory root's, mode 0750, and a
    # hybrid-vsock listener goes in it, which takes the owner's rights,
    # not CAP_DAC_OVERRIDE. No capability: no port below 1024, no other
    # user's files (the units' CapabilityBoundingSet= is empty too).
    runAsUser: 0
    runAsGroup: 0
    runAsNonRoot: false
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    privileged: false
    capabilities:
      drop: [ALL]
    {{- if eq $v.seccomp.profile "Localhost" }}
    # The container's, not the pod's: the init container installing this
    # profile starts before it exists on a new node.
    seccompProfile:
      type: Localhost
      localhostProfile: {{ $v.seccomp.localhostProfile }}
    {{- else }}
    seccompProfile:
      type: {{ $v.seccomp.profile }}
    {{- end }}
  volumeMounts:
    # HostToContainer: VM directories made after the pod started (each
    # sandbox's) appear in it.
    - name: run-vc
      mountPath: /run/vc
      mountPropagation: HostToContainer
    - name: run-kata
      mountPath: /run/kata
      mountPropagation: HostToContainer
    - name: handover
      mountPath: {{ $v.handover.hostDir }}
    {{- if $v.hostProc }}
    - name: host-proc
      mountPath: /host/proc
      readOnly: true
    {{- end }}
    {{- if $ca }}
    - name: otlp-ca
      mountPath: /etc/katatrace/otlp-ca
      readOnly: true
    {{- end }}
{{- end }}

{{/*
The pod spec's parts every DaemonSet shares, after containers: the init
container installing the seccomp profile, the volumes, scheduling.
*/}}
{{- define "katatrace.initContainers" -}}
{{- $v := .Values -}}
{{- if and (eq $v.seccomp.profile "Localhost") $v.seccomp.installProfile }}
initContainers:
  # Writes this architecture's profile where the kubelet reads Localhost
  # profiles (KUBELET_ROOT/seccomp/), before the roles start under it.
  - name: seccomp-profile
    image: {{ include "katatrace.image" . }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    command:
      - /usr/bin/katatrace
      - seccomp-profile
      - --write=/host-seccomp/{{ $v.seccomp.localhostProfile }}
    env:
      - name: KATATRACE_LOG_FORMAT
        value: {{ $v.logFormat | quote }}
    resources:
      requests:
        cpu: 10m
        memory: 16Mi
      limits:
        memory: 32Mi
    securityContext:
      # uid 0: the kubelet's directory is root's.
      runAsUser: 0
      runAsGroup: 0
      runAsNonRoot: false
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      privileged: false
      capabilities:
        drop: [ALL]
      # It makes no vsock socket: the runtime's default serves.
      seccompProfile:
        type: RuntimeDefault
    volumeMounts:
      - name: seccomp
        mountPath: /host-seccomp/{{ dir $v.seccomp.localhostProfile }}
{{- end }}
{{- end }}

{{- define "katatrace.volumes" -}}
{{- $v := .Values -}}
volumes:
  - name: run-vc
    hostPath:
      path: /run/vc
      type: DirectoryOrCreate
  - name: run-kata
    hostPath:
      path: /run/kata
      type: DirectoryOrCreate
  # The handover sockets; root's 0755 as the kubelet makes it, as systemd
  # makes a RuntimeDirectory=.
  - name: handover
    hostPath:
      path: {{ $v.handover.hostDir }}
      type: DirectoryOrCreate
  {{- if $v.hostProc }}
  # The node's processes, read-only: a QEMU guest's sandbox ID.
  - name: host-proc
    hostPath:
      path: /proc
      type: Directory
  {{- end }}
  {{- if and (eq $v.seccomp.profile "Localhost") $v.seccomp.installProfile }}
  - name: seccomp
    hostPath:
      path: {{ $v.seccomp.kubeletRoot }}/seccomp/{{ dir $v.seccomp.localhostProfile }}
      type: DirectoryOrCreate
  {{- end }}
  {{- if $v.otlp.ca.secretName }}
  - name: otlp-ca
    secret:
      secretName: {{ $v.otlp.ca.secretName }}
      items:
        - key: {{ $v.otlp.ca.key }}
          path: {{ $v.otlp.ca.key }}
  {{- else if $v.otlp.ca.configMapName }}
  - name: otlp-ca
    configMap:
      name: {{ $v.otlp.ca.configMapName }}
      items:
        - key: {{ $v.otlp.ca.key }}
          path: {{ $v.otlp.ca.key }}
  {{- end }}
{{- end }}

{{/* The pod template's metadata: .root, .component. */}}
{{- define "katatrace.podMetadata" -}}
{{- $v := .root.Values -}}
labels:
  {{- include "katatrace.selectorLabels" . | nindent 2 }}
  {{- with $v.podLabels }}
  {{- toYaml (omit . "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component") | nindent 2 }}
  {{- end }}
{{- if or $v.metrics.annotations $v.podAnnotations }}
annotations:
  {{- if $v.metrics.annotations }}
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ $v.metrics.port | quote }}
  prometheus.io/path: /metrics
  {{- end }}
  {{- with $v.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "katatrace.scheduling" -}}
{{- $v := .Values -}}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
# The host's user namespace: Kata's directories are the host's uid 0's.
hostUsers: true
# No API access.
automountServiceAccountToken: false
enableServiceLinks: false
{{- end }}

{{/*
The rollout: a new pod beside the old (maxSurge 1) that takes its guests
over the handover socket, the old one deleted only once the new is ready
(maxUnavailable 0).
*/}}
{{- define "katatrace.updateStrategy" -}}
updateStrategy:
  type: RollingUpdate
  rollingUpdate:
    maxSurge: 1
    maxUnavailable: 0
{{- end }}
