"""``python deploy/liver_seg_app -i <dicom folder> -o <output folder> -m <bundle>/models/model.ts``."""

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import LiverSegApp  # noqa: E402

if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"))
    LiverSegApp().run()
