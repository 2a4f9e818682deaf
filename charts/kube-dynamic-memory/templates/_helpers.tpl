{{/*
The image of a component: (list $ "memservice").
*/}}
{{- define "dm.image" -}}
{{- $root := index . 0 -}}
{{- if eq $root.Values.image.tag "latest" }}
{{- fail "image.tag: latest is never published; leave it empty for the chart's appVersion, or give a release's tag" }}
{{- end }}
{{- printf "%s/%s:%s" $root.Values.image.repository (index . 1) ($root.Values.image.tag | default $root.Chart.AppVersion) -}}
{{- end }}

{{/*
Fields of a container every component shares: image, pull policy.
*/}}
{{- define "dm.imageFields" -}}
image: {{ include "dm.image" . }}
imagePullPolicy: {{ (index . 0).Values.image.pullPolicy }}
{{- end }}

{{/*
The pod spec fields every component shares: placement and pull secrets, as
(dict "root" $ "placement" .Values.<component>), indented by the caller with nindent.
Empty fields are left out.
*/}}
{{- define "dm.podFields" -}}
{{- $lines := list }}
{{- with .placement.nodeSelector }}
{{- $lines = append $lines (printf "nodeSelector:\n%s" (toYaml . | indent 2)) }}
{{- end }}
{{- with .placement.tolerations }}
{{- $lines = append $lines (printf "tolerations:\n%s" (toYaml .)) }}
{{- end }}
{{- with .placement.affinity }}
{{- $lines = append $lines (printf "affinity:\n%s" (toYaml . | indent 2)) }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
{{- $lines = append $lines (printf "imagePullSecrets:\n%s" (toYaml .)) }}
{{- end }}
{{- join "\n" $lines }}
{{- end }}

{{/*
The identity volume of a client of the memory service (the scheduler, a node agent, a
DRA plugin), mounted at /etc/dynamic-memory/identity with ca.crt, tls.crt and tls.key
in either identity mode. The argument is the Secret of the certificates mode.
*/}}
{{- define "dm.identityVolume" -}}
- name: identity
{{- if eq .mode "podCertificate" }}
  # The component's identity: a certificate signed by the memory service
  # (PodCertificateRequest signer dynamicmemory.io/memservice, which signs for this
  # ServiceAccount only; a node component's names this node) and renewed by the kubelet
  # before it expires; and the memory service's CA, from its ClusterTrustBundle. Both
  # are read again when they change. No key of another pod is on this node.
  projected:
    sources:
    - podCertificate:
        signerName: dynamicmemory.io/memservice
        keyType: ECDSAP256
        certificateChainPath: tls.crt
        keyPath: tls.key
    - clusterTrustBundle:
        signerName: dynamicmemory.io/memservice
        labelSelector:
          matchLabels:
            app.kubernetes.io/part-of: dynamic-memory
        path: ca.crt
{{- else }}
  # The component's certificate and the CA, made by `memservice certs`
  # (docs/operations.md); read again when the Secret changes.
  secret:
    secretName: {{ .secret }}
    defaultMode: 0400
{{- end }}
{{- end }}

{{/*
The flags with which a node component reaches the memory service.
*/}}
{{- define "dm.memserviceClientArgs" -}}
- --memservice-address=memservice.dynamic-memory-system.svc:8443
- --memservice-ca=/etc/dynamic-memory/identity/ca.crt
- --memservice-cert=/etc/dynamic-memory/identity/tls.crt
- --memservice-key=/etc/dynamic-memory/identity/tls.key
{{- end }}

{{/*
The nodes of the node DaemonSets: one entry with no name (every selected node) when
identities come from the signer, one per node of identity.certificates.nodes otherwise.
*/}}
{{- define "dm.nodeSets" -}}
{{- if eq .Values.identity.mode "certificates" }}
{{- toJson .Values.identity.certificates.nodes }}
{{- else }}
{{- toJson (list "") }}
{{- end }}
{{- end }}

{{/*
Whether the DRA plugins publish binding conditions: when a stock kube-scheduler places
pods that ask for dynamic memory.
*/}}
{{- define "dm.bindingConditions" -}}
{{- ne .Values.scheduler.mode "cluster" }}
{{- end }}
