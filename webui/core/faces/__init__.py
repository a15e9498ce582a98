"""Face restoration (A1111's built-in post-processing): align.py finds and aligns faces, restorers.py
loads GFPGAN / CodeFormer / RestoreFormer files and runs them (GFPGAN and CodeFormer in plain torch:
gfpgan_arch.py, codeformer_arch.py; RestoreFormer through the optional spandrel). The names here import
nothing heavy."""

from typing import Final

GFPGAN: Final = "GFPGAN"
CODEFORMER: Final = "CodeFormer"
RESTOREFORMER: Final = "RestoreFormer"
KINDS: Final = (CODEFORMER, GFPGAN, RESTOREFORMER)  # A1111 lists CodeFormer, then GFPGAN
