"""Import support for native extensions linked into the eryx interpreter.

WASI has no dlopen, so extension modules such as numpy's are linked into the
interpreter and registered as built-in modules under their dotted names
(numpy.core._multiarray_umath). CPython 3.11's BuiltinImporter only serves
top-level names (it declines whenever a parent package's path is given), so
this module puts a finder for dotted built-ins on sys.meta_path, and a last
finder that names the parts of a package that were left out of the image.
"""

import sys
from importlib.machinery import BuiltinImporter, ModuleSpec

import _imp

# Parts of packages in the image that are deliberately not there; importing
# one fails with this reason instead of a bare "No module named".
LEFT_OUT = {
    "numpy.distutils": "it builds C extensions, and the sandbox has no compiler",
    "numpy.f2py": "it builds Fortran extensions, and the sandbox has no compiler",
    "numpy.core._simd": "it tests SIMD dispatch, which the wasm build does not have",
}


class DottedBuiltinFinder:
    """Finds built-in modules whose names contain a dot."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if "." in fullname and _imp.is_builtin(fullname):
            return ModuleSpec(fullname, BuiltinImporter, origin="built-in")
        return None


class LeftOutFinder:
    """Last on sys.meta_path: explains a missing module that was left out."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        for name, why in LEFT_OUT.items():
            if fullname == name or fullname.startswith(name + "."):
                raise ModuleNotFoundError(
                    f"No module named {fullname!r}: {name} is left out of the eryx sandbox ({why})",
                    name=fullname)
        return None


if DottedBuiltinFinder not in sys.meta_path:
    sys.meta_path.insert(0, DottedBuiltinFinder)
    sys.meta_path.append(LeftOutFinder)
