"""hostfile-gen: an MPI hostfile whose slots come from each pod's GPUs.

- :mod:`.slots`: slots per pod from resource limits/requests (``SlotRule``);
- :mod:`.core`: selected pods -> :class:`~.core.Hostfile` (names, order, launcher), or
  :class:`~.core.Refused` for an empty or partial result -- k8s-waitfor reuses this;
- :mod:`.formats`: ``openmpi``, ``hydra``, ``expanded``, ``json``;
- :mod:`.output`: atomic file replacement and ConfigMap create-or-update;
- :mod:`.cli`: the ``hostfile-gen`` command (exit statuses in its ``--help``).
"""

from __future__ import annotations
