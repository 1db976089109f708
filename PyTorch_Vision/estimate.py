"""What the committed notebook imports from here, until its next full run replaces its cells."""
from .report import RunEstimate, estimate_run, images_per_second  # noqa: F401
