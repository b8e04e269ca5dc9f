"""Command line entry point, like RecBole's run_recbole.py.

    python run_recbole_llmsrec.py                       # default quick start (LLMSRec, ml-100k slice)
    python run_recbole_llmsrec.py -m SASRec -d ml-100k  # any RecBole model through the plugin
    python run_recbole_llmsrec.py --config_files=a.yaml --epochs=3
"""

import argparse

from recbole_llmsrec.quick_start import default_config_files, run_recbole_llmsrec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", type=str, default=None, help="name of the model")
    parser.add_argument("--dataset", "-d", type=str, default=None, help="name of the dataset")
    parser.add_argument("--config_files", type=str, default=None, help="space-separated config files")
    args, _ = parser.parse_known_args()  # --key=value overrides are read by RecBole's Config

    config_files = args.config_files.strip().split(" ") if args.config_files else None
    if args.model is None and args.dataset is None and config_files is None:
        config_files = default_config_files()
    run_recbole_llmsrec(model=args.model, dataset=args.dataset, config_file_list=config_files)


if __name__ == "__main__":
    main()
