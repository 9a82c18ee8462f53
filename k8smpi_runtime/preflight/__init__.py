"""``k8smpi-preflight``: confirm in every pod that GPUs, InfiniBand, limits and MPI will work.

Run in a pod it checks that pod (:mod:`.local`); given a selection of pods (``--statefulset``,
``--job``, ``-l``, ``--pods``, ``--hostfile``) it runs itself in every one of them through
pods/exec and prints one table (:mod:`.job`, :mod:`.table`). Facts come from ``/proc``, ``/sys``
and ``/dev`` (under ``--root`` for fixture trees, :mod:`.host`), the image's own record
(:mod:`.image`), and ``libcuda`` / ``libibverbs`` through ctypes only where a live call is the
only way to know (:mod:`.native`).
"""
