"""`Datum`: one labelled image, Dassl's item type (its own module, so the dataset base and the
CoOp-pickle reader both import it without importing each other)."""


class Datum:
    """One labelled image: ``impath`` (absolute), ``label`` (int), ``domain``, ``classname``."""

    __slots__ = ("_impath", "_label", "_domain", "_classname")

    def __init__(self, impath="", label=0, domain=0, classname=""):
        if not isinstance(impath, str):
            raise TypeError(f"Datum.impath must be a str, got {type(impath).__name__}")
        self._impath = impath
        self._label = int(label)
        self._domain = int(domain)
        self._classname = classname

    impath = property(lambda self: self._impath)
    label = property(lambda self: self._label)
    domain = property(lambda self: self._domain)
    classname = property(lambda self: self._classname)

    def __repr__(self):
        return f"Datum({self._impath!r}, label={self._label}, classname={self._classname!r})"

    def __eq__(self, other):
        return isinstance(other, Datum) and (self.impath, self.label, self.domain, self.classname) == (
            other.impath, other.label, other.domain, other.classname)

    def __hash__(self):
        return hash((self._impath, self._label))
