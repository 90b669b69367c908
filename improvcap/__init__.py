"""improvcap: shared-clock capture of cameras, microphones and serial motion capture into take folders."""
from .errors import ImprovcapError
from .reader import open_take

__version__ = "0.1.0"
__all__ = ["ImprovcapError", "__version__", "open_take"]
