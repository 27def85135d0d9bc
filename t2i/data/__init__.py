"""Dataset readers (synthetic, oxford102, cub, coco, folder) -> one prepared format.

``t2i.data.prepared.load_prepared`` reads what the ingest stage wrote; ``t2i.data.readers``
maps ``ingest.dataset`` names to reader modules.
"""

from t2i.data.prepared import Prepared, load_prepared, write_prepared

__all__ = ["Prepared", "load_prepared", "write_prepared"]
