"""Writes the lint test notebooks of this folder (kept as data; rerun after editing CASES)."""

import json
from pathlib import Path

import nbformat

HERE = Path(__file__).parent
# name: (cells, expected findings [rule, cell, line])
CASES = {
    "ENV001-found": (
        ["import pandas as pd", "!pip install -q lightgbm==4.3.0", "%pip install xgboost",
         "%conda install -y -c conda-forge shap", "import subprocess, sys\nsubprocess.check_call([sys.executable, '-m', 'pip', 'install', 'catboost'])",
         "%%bash\necho start\napt-get install -y libgomp1"],
        [["ENV001", 1, 1], ["ENV001", 2, 1], ["ENV001", 3, 1], ["ENV001", 4, 2], ["ENV001", 5, 3]],
    ),
    "ENV001-clean": (
        ["import pandas as pd", "!pip list", "%pip show pandas", "!pip install -q lightgbm  # envctl: ignore[ENV001]",
         "# pip install xgboost (done in the image)"],
        [],
    ),
    "ENV002-found": (
        ["import pandas as pd\nimport sklearn\nfrom sklearn.linear_model import LogisticRegression", "from google.cloud import bigquery, storage", "import torch.nn as nn"],
        [["ENV002", 0, 2], ["ENV002", 0, 3], ["ENV002", 1, 1], ["ENV002", 2, 1]],
    ),
    "ENV002-clean": (
        ["import os, json, sys\nimport pandas as pd\nimport numpy as np", "from google.cloud import bigquery", "try:\n    import torch\nexcept ImportError:\n    torch = None", "import helpers"],
        [],
    ),
    "AUTH001-found": (
        ["!gcloud auth login", "from google.colab import auth\nauth.authenticate_user()",
         "from google_auth_oauthlib.flow import InstalledAppFlow\nflow = InstalledAppFlow.from_client_secrets_file('client.json', ['scope'])",
         "import os\ncreds = open(os.path.expanduser('~/.config/gcloud/application_default_credentials.json')).read()"],
        [["AUTH001", 0, 1], ["AUTH001", 1, 1], ["AUTH001", 1, 2], ["AUTH001", 2, 2], ["AUTH001", 3, 2]],
    ),
    "AUTH001-clean": (
        ["import google.auth\ncredentials, project = google.auth.default()", "!gcloud config list"],
        [],
    ),
    "AUTH002-found": (
        ["from google.cloud import bigquery, storage\nbq = bigquery.Client()", "gcs = storage.Client()",
         "from google.cloud import aiplatform\naiplatform.init(location='us-central1')"],
        [["AUTH002", 0, 2], ["AUTH002", 1, 1], ["AUTH002", 2, 2]],
    ),
    "AUTH002-clean": (
        ["import os\nfrom google.cloud import bigquery, storage, aiplatform\nPROJECT = os.environ['GOOGLE_CLOUD_PROJECT']",
         "bq = bigquery.Client(project=PROJECT)\ngcs = storage.Client(PROJECT)\naiplatform.init(project=PROJECT, location='us-central1')"],
        [],
    ),
    "ENVV001-found": (
        ["import os\nbucket = os.environ['DATA_BUCKET']", "out = os.getenv('REPORT_DIR')", "from os import environ\nkey = environ.get('API_KEY')"],
        [["ENVV001", 0, 2], ["ENVV001", 1, 1], ["ENVV001", 2, 2]],
    ),
    "ENVV001-clean": (
        ["import os\nout = os.environ['OUTPUT_DIR']\nmodel = os.environ['MODEL_BUCKET']", "home = os.environ['HOME']\nlevel = os.getenv('LOG_LEVEL', 'INFO')",
         "os.environ['RUN_ID'] = 'x'\nrun = os.environ['RUN_ID']", "%env SEED=7\nseed = os.environ['SEED']"],
        [],
    ),
    "PATH001-found": (
        ["import pandas as pd\ndf = pd.read_csv('/home/jupyter/data/train.csv')", "!cp ~/Downloads/labels.json .",
         "with open('data/missing.csv') as f:\n    rows = f.read()"],
        [["PATH001", 0, 2], ["PATH001", 1, 1], ["PATH001", 2, 1]],
    ),
    "PATH001-clean": (
        ["import pandas as pd\ndf = pd.read_csv('data/train.csv')", "with open('results.csv', 'w') as f:\n    f.write('a')",
         "df2 = pd.read_csv('gs://bucket/train.csv')", "\"\"\"Written on /home/jupyter by hand.\"\"\"\nx = 1"],
        [],
    ),
    "INT001-found": (
        ["name = input('Your name: ')", "import getpass\npw = getpass.getpass()",
         "import ipywidgets as widgets\nfrom ipywidgets import interact_manual\nbutton = widgets.Button(description='Run')\nbutton.on_click(print)",
         "interact_manual(print, x=1)"],
        [["INT001", 0, 1], ["INT001", 1, 2], ["INT001", 2, 3], ["INT001", 2, 4], ["INT001", 3, 1]],
    ),
    "INT001-clean": (
        ["# parameters\nname = 'batch'", "import ipywidgets as widgets\nslider = widgets.IntSlider(value=3)", "text = 'input()'"],
        [],
    ),
    "RES001-found": (
        ["import torch\nassert torch.cuda.is_available(), 'needs a GPU'", "device = torch.device('cuda')\nx = torch.ones(3).to('cuda:0')",
         "import tensorflow as tf\ngpu = tf.config.list_physical_devices('GPU')[0]", "!nvidia-smi",
         "if not torch.cuda.is_available():\n    raise RuntimeError('no GPU')"],
        [["RES001", 0, 2], ["RES001", 1, 1], ["RES001", 1, 2], ["RES001", 2, 2], ["RES001", 3, 1], ["RES001", 4, 1]],
    ),
    "RES001-clean": (
        ["import torch\ndevice = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\nx = torch.ones(3).to(device)",
         "import tensorflow as tf\ncpus = tf.config.list_physical_devices('CPU')[0]",
         "if torch.cuda.is_available():\n    model = torch.nn.Linear(2, 2).cuda()"],
        [],
    ),
}


def main() -> None:
    expected = {}
    for name, (sources, findings) in CASES.items():
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
        for i, cell in enumerate(nb.cells):
            cell.id = f"c{i}"
        nbformat.write(nb, HERE / f"{name}.ipynb")
        expected[name] = findings
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
