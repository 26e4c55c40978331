"""Import names and the distributions that provide them, where the two differ.

The test stage names the package of a missing module with it; `envctl lint` (ENV002)
uses it both ways: to name the distribution of an import and to know which modules
an installed distribution provides.
"""

from __future__ import annotations

# Import name -> pip distribution, where they differ.
DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "cv2": "opencv-python-headless",
    "PIL": "Pillow",
    "yaml": "PyYAML",
    "bs4": "beautifulsoup4",
    "skimage": "scikit-image",
    "dateutil": "python-dateutil",
    "google.cloud": "google-cloud-<service>",
    "dotenv": "python-dotenv",
    "jwt": "PyJWT",
    "Crypto": "pycryptodome",
    "OpenSSL": "pyOpenSSL",
    "attr": "attrs",
    "magic": "python-magic",
    "docx": "python-docx",
    "pptx": "python-pptx",
    "serial": "pyserial",
    "lightgbm": "lightgbm",
    "tensorflow_hub": "tensorflow-hub",
    "google_auth_oauthlib": "google-auth-oauthlib",
    "googleapiclient": "google-api-python-client",
    "vertexai": "google-cloud-aiplatform",
    "zmq": "pyzmq",
    "fitz": "PyMuPDF",
    "google.protobuf": "protobuf",
    "google.genai": "google-genai",
}


def normalize(distribution: str) -> str:
    """PEP 503 normal form: lowercase, runs of `-_.` as one `-`."""
    out: list[str] = []
    for char in distribution.lower():
        if char in "-_.":
            if not out or out[-1] != "-":
                out.append("-")
        else:
            out.append(char)
    return "".join(out)


def distribution_for(module: str) -> str:
    """The distribution to install for an import: `sklearn` -> scikit-learn,
    `google.cloud.bigquery` -> google-cloud-bigquery."""
    parts = module.split(".")
    if parts[:2] == ["google", "cloud"] and len(parts) > 2:
        return "google-cloud-" + parts[2].replace("_", "-")
    if module in DISTRIBUTIONS:
        return DISTRIBUTIONS[module]
    if parts[0] == "google" and len(parts) > 1 and parts[1] != "cloud":
        return DISTRIBUTIONS.get(".".join(parts[:2]), "google-" + parts[1].replace("_", "-"))
    return DISTRIBUTIONS.get(parts[0], parts[0])


def modules_of(distribution: str) -> set[str]:
    """Top-level import names a distribution likely provides, when the SBOM doesn't list them."""
    normal = normalize(distribution)
    names = {normal.replace("-", "_")}
    names.update(m.split(".")[0] for m, d in DISTRIBUTIONS.items() if normalize(d) == normal)
    if normal.startswith("google-cloud-") or normal.startswith("google-"):
        names.add("google")
    return names
