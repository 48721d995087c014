# boot.py runs first on every reset. Keep it tiny: anything that can fail belongs in main.py,
# where the slot picker can fall back to the other image.
import gc

gc.collect()
