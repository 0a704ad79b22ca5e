"""The package error, in a module of its own: the manifest (which validates each variant's runtime against
`edge.package.runtimes.RUNTIMES`) and the runtimes (which raise it) both import it without importing each
other the other way round."""

from __future__ import annotations

from common.errors import UserError


class PackageError(UserError):
    """A package that must not be loaded: the message names the file or field at fault."""
