from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()

# RecBole 1.2.1 requires ray<=2.6.3, which has no wheels for Python >= 3.12; RecBole needs ray
# only in recbole.quick_start, which the plugin never imports. There RecBole is installed
# first with `pip install --no-deps recbole==1.2.1` (README) and its other requirements come
# from here.
NEW_PYTHON = "python_version >= '3.12'"
RECBOLE_REQUIREMENTS_BUT_RAY = ("colorama==0.4.4", "colorlog==4.7.2", "plotly>=4.0.0", "psutil>=5.9.0",
                                "scikit-learn>=0.23.2", "scipy>=1.6.0", "tabulate>=0.8.10", "tensorboard>=2.5.0",
                                "texttable>=0.9.0", "thop>=0.1.1.post2207130030")

setup(
    name="recbole-llmsrec",
    version="0.1.0",
    description="LLM-SRec (Kim et al., KDD 2025) as a RecBole plugin: a frozen LLM distilled from a CF sequential recommender.",
    long_description=long_description,
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["recbole_llmsrec", "recbole_llmsrec.*"]) + ["recbole_llmsrec.properties"],
    package_dir={"recbole_llmsrec.properties": "properties"},
    package_data={"recbole_llmsrec.properties": ["*/*.yaml"]},
    py_modules=["run_recbole_llmsrec"],
    install_requires=[
        "recbole==1.2.1; python_version < '3.12'",
        *(f"{requirement}; {NEW_PYTHON}" for requirement in RECBOLE_REQUIREMENTS_BUT_RAY),
        "torch",
        "transformers>=5",
        "accelerate",
        "gguf",
        "safetensors",
        "peft",
        "pyyaml",
        "pandas<3",
        "numpy",
        "tqdm",
        "matplotlib>=3.7",  # figure legends placed "outside" a constrained layout
    ],
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": ["run_recbole_llmsrec=run_recbole_llmsrec:main"]},
)
