"""The installed distribution's version, which every command prints for --version."""

from importlib import metadata


def version() -> str:
    """`hushwire`'s version as installed, or "unknown" when run from an uninstalled tree."""
    try:
        return metadata.version("hushwire")
    except metadata.PackageNotFoundError:
        return "unknown"
