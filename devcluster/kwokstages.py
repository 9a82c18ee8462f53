"""A kwok stage that ends a pod on request, so Jobs on kwok nodes can finish.

kwok never ends a pod by itself (Running and Ready until deleted). A pod that carries the
annotation ``kwok.k8smpi.dev/exit-code: "N"`` ends as if its containers had run:

- after ``kwok.k8smpi.dev/delay`` (a Go duration: ``3s``; default at once),
- phase ``Succeeded`` for ``"0"``, else ``Failed``,
- the container named by ``kwok.k8smpi.dev/container`` (default: every app container) terminated
  with exit code N and ``kwok.k8smpi.dev/message`` as its termination message, every other one
  with 0; when that container is an init container, the app containers never started
  (``PodInitializing``), as a failed init container leaves them.

Pods without the annotation are untouched: the stage is opt-in per pod (a test annotates the
pod, or renders it with the annotation).
"""

from __future__ import annotations

EXIT_CODE = "kwok.k8smpi.dev/exit-code"
DELAY = "kwok.k8smpi.dev/delay"
CONTAINER = "kwok.k8smpi.dev/container"
MESSAGE = "kwok.k8smpi.dev/message"

COMPLETE_ON_REQUEST = f"""\
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-complete-on-request
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Running']
    - key: '.metadata.annotations["{EXIT_CODE}"]'
      operator: Exists
  delay:
    durationMilliseconds: 0
    durationFrom:
      expressionFrom: '.metadata.annotations["{DELAY}"]'
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      {{{{ $code := index .metadata.annotations "{EXIT_CODE}" }}}}
      {{{{ $target := or (index .metadata.annotations "{CONTAINER}") "" }}}}
      {{{{ $message := or (index .metadata.annotations "{MESSAGE}") "" }}}}
      {{{{ $inInit := false }}}}
      {{{{ range .spec.initContainers }}}}
      {{{{ if eq .name $target }}}}{{{{ $inInit = true }}}}{{{{ end }}}}
      {{{{ end }}}}
      conditions:
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: PodScheduled}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: Initialized}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "False", type: ContainersReady,
         reason: PodCompleted}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "False", type: Ready,
         reason: PodCompleted}}
      initContainerStatuses:
      {{{{ range .spec.initContainers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        restartCount: 0
        state:
          terminated:
            {{{{ if eq .name $target }}}}
            exitCode: {{{{ $code }}}}
            reason: {{{{ if eq $code "0" }}}}Completed{{{{ else }}}}Error{{{{ end }}}}
            message: {{{{ $message | Quote }}}}
            {{{{ else }}}}
            exitCode: 0
            reason: Completed
            {{{{ end }}}}
            startedAt: {{{{ $now | Quote }}}}
            finishedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        restartCount: 0
        started: false
        state:
          {{{{ if $inInit }}}}
          waiting:
            reason: PodInitializing
          {{{{ else }}}}
          terminated:
            {{{{ if or (eq $target "") (eq .name $target) }}}}
            exitCode: {{{{ $code }}}}
            reason: {{{{ if eq $code "0" }}}}Completed{{{{ else }}}}Error{{{{ end }}}}
            message: {{{{ $message | Quote }}}}
            {{{{ else }}}}
            exitCode: 0
            reason: Completed
            {{{{ end }}}}
            startedAt: {{{{ $now | Quote }}}}
            finishedAt: {{{{ $now | Quote }}}}
          {{{{ end }}}}
      {{{{ end }}}}
      phase: {{{{ if eq $code "0" }}}}Succeeded{{{{ else }}}}Failed{{{{ end }}}}
"""
