from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()

setup(
    name="recbole-llmsrec",
    version="0.1.0",
    description="LLM-SRec (Kim et al., KDD 2025) as a RecBole plugin: a frozen LLM distilled from a CF sequential recommender.",
    long_description=long_description,
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["recbole_llmsrec", "recbole_llmsrec.*"]) + ["recbole_llmsrec.properties"],
    package_dir={"recbole_llmsrec.properties": "properties"},
    package_data={"recbole_llmsrec.properties": ["*/*.yaml"]},
    py_modules=["run_recbole_llmsrec"],
    install_requires=[
        "recbole==1.2.1",
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
        "matplotlib",
    ],
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": ["run_recbole_llmsrec=run_recbole_llmsrec:main"]},
)
