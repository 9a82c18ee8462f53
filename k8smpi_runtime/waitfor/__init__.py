"""``k8s-waitfor``: wait until a job's pods are Ready and resolvable -- bounded and explained.

One module per concern, the pure ones first:

- :mod:`.exitcodes` -- the documented exit statuses;
- :mod:`.readiness` -- what "ready" means for a pod and for the whole selection (pure);
- :mod:`.dns` -- getaddrinfo checks, concurrent with bounded parallelism and backoff;
- :mod:`.watching` -- one list + watch of the pods (resume on disconnect, relist on 410);
- :mod:`.progress` -- the live tty line, the log lines and the failure table;
- :mod:`.probe` -- the optional harmless exec into each pod;
- :mod:`.denied` -- 401/403 as one line naming who lacks which permission;
- :mod:`.waiting` -- the loop that ties them together under one deadline;
- :mod:`.cli` -- the command line (:func:`~k8smpi_runtime.waitfor.cli.main`).
"""

from __future__ import annotations
