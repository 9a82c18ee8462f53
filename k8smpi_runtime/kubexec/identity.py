"""Which uid/gid/groups the remote command runs as: :func:`target`.

The rule (the job runs as the user, and so do its processes in the pods):

- no ``-l`` / ``user@`` / ``-o User=``: kubexec's own uid, gid and supplementary groups.
  Exception: a kubexec running as **root** asks for nothing and the command runs as the
  container's user (as ``kubectl exec`` does). Root may become anyone, so insisting on uid 0
  would only make non-root worker pods fail; a launcher that runs as root is common in
  launcher pods;
- a number (``-l 1000``): that uid; the gid is the pod's passwd entry's, else the uid itself;
  no supplementary groups. Numeric ids need no passwd entry anywhere;
- a name (``-l alice``): looked up in *this* machine's passwd (the launcher pod's image):
  its uid, primary gid and the groups it belongs to. An unknown name is an error (exit 255)
  that suggests the numeric form.

In the pod, :mod:`~k8smpi_runtime.kubexec.remote`'s wrapper does nothing when the container
already runs as the target uid, switches when the container runs as root, and otherwise fails
with a message naming ``securityContext.runAsUser``.
"""

from __future__ import annotations

import os

from k8smpi_runtime.errors import K8smpiError
from k8smpi_runtime.records import Record


class UnknownUserError(K8smpiError):
    """A user name that this machine's passwd does not know."""


class Identity(Record):
    """The remote identity; ``uid=None`` means whatever the container runs as."""

    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()

    def describe(self) -> str:
        if self.uid is None:
            return "the container's user"
        groups = ",".join(map(str, self.groups)) or "-"
        return f"uid={self.uid} gid={self.gid if self.gid is not None else '?'} groups={groups}"


def target(user: str | None) -> Identity:
    """The identity for ``user`` as given on the command line (``None``: not given)."""
    if user is None:
        uid = os.getuid()
        if uid == 0:
            return Identity()
        gid = os.getgid()
        return Identity(uid=uid, gid=gid, groups=_supplementary(os.getgroups(), gid))
    if user.isdigit():
        uid = int(user)
        if uid >= 2**32 - 1:
            raise UnknownUserError(f"user id {user} is out of range")
        return Identity(uid=uid)
    import pwd  # noqa: PLC0415 - only named users need the passwd database

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UnknownUserError(
            f"unknown user {user!r}: not in this machine's passwd; give a numeric uid "
            f"(-l 1000) or add the user to the launcher's image"
        ) from None
    try:
        groups = os.getgrouplist(user, entry.pw_gid)
    except OSError:
        groups = []
    return Identity(uid=entry.pw_uid, gid=entry.pw_gid, groups=_supplementary(groups, entry.pw_gid))


def _supplementary(groups: list[int], gid: int) -> tuple[int, ...]:
    """Supplementary groups, sorted and unique, including the primary gid (as id(1) lists it)."""
    return tuple(sorted(set(groups) | {gid}))
