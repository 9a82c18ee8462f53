"""Container images for k8smpi jobs and the tool that builds them (``python -m images.build``).

Not part of the runtime package: nothing in ``k8smpi_runtime`` imports this, and the docker SDK
it uses is the optional ``images`` extra (the import-linter contract keeps it out of the runtime).
"""

from __future__ import annotations
