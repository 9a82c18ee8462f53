"""``k8smpi-job``: one MPI job from a batch script and an image -- render, submit, follow, end.

One module per concern:

- :mod:`.exitcodes` -- the documented exit statuses;
- :mod:`.shared` -- what a job is made of, defined once: object names, each MPI flavour's
  launcher environment and hostfile dialect, the launcher's RBAC rules, fixed paths (the
  deploy/ agreement test compares deploy/ with these);
- :mod:`.spec` -- the inputs (command line and job spec file) and their validation;
- :mod:`.pods` -- the worker and launcher pod templates both shapes share;
- :mod:`.seed` and :mod:`.jobset` -- the two shapes' manifests;
- :mod:`.yamlout` -- a small YAML emitter for ``kubectl apply -f -``;
- :mod:`.applying` -- server-side apply and delete through the lean REST client;
- :mod:`.following` -- the state of a submitted job from its objects (pure) and the watch;
- :mod:`.submitting` -- submit: apply, show progress, stream the launcher's output, clean up;
- :mod:`.control` -- ``status``, ``logs``, ``delete`` on a job name;
- :mod:`.owning` -- the launcher's sidecar that owns the workers and releases them at the end;
- :mod:`.cli` -- the command line (:func:`~k8smpi_runtime.job.cli.main`).
"""

from __future__ import annotations
