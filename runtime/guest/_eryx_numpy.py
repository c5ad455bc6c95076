"""numpy adjustments for WASI, imported right after numpy while the numpy
image is pre-initialised.

numpy writes and reads arrays on real files through a duplicated file
descriptor (ndarray.tofile, np.fromfile), and WASI has no dup(). np.save,
np.load and np.savez take that path for real files; telling numpy's format
module that no file object is a real file makes them use the file's own
read and write methods, which work.
"""

import numpy.lib.format

numpy.lib.format.isfileobj = lambda f: False
