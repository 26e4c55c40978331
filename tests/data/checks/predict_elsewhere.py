"""A batch container that ignores AIP_MODEL_DIR and writes to a folder of its own."""

import json
import os

os.makedirs("/data/model", exist_ok=True)
with open("/data/model/predictions.json", "w") as f:
    json.dump({"rows": 3}, f)
print("wrote /data/model/predictions.json")
