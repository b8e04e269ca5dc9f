"""Command line entry point, like RecBole's run_recbole.py.

    python run_recbole_llmsrec.py                       # default quick start (LLMSRec, ml-100k slice)
    python run_recbole_llmsrec.py -m SASRec -d ml-100k  # any RecBole model through the plugin
    python run_recbole_llmsrec.py --config_files=a.yaml --epochs=3

    # distributed, as RecBole (README, "Many GPUs"): 4 processes on this machine, or torchrun
    python run_recbole_llmsrec.py --nproc=4 --gpu_id=0,1,2,3 --config_files=a.yaml
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29400 \
        run_recbole_llmsrec.py --gpu_id=0,1,2,3,4,5,6,7 --config_files=a.yaml

    # compare models on identical data (README, "Compare models"), optionally with the sequence probes
    python run_recbole_llmsrec.py --compare=SASRec,GRU4Rec,LLMSRec,LLMSRec-noDU --dataset=ml-100k \\
        --seeds=1 --probes=all

    # continue a killed run from its checkpoint, to the uninterrupted run's result (README, "Resume")
    python run_recbole_llmsrec.py --resume=saved/LLMSRec-....safetensors

    # use a trained model (README, "Recommendations and vectors")
    python run_recbole_llmsrec.py --recommend=saved/LLMSRec-....safetensors --topk=10 --out=recommendations.tsv
    python run_recbole_llmsrec.py --export=saved/LLMSRec-....safetensors --out=vectors.safetensors
"""

import argparse
import sys

from recbole_llmsrec.distributed import torchrun_settings
from recbole_llmsrec.quick_start import default_config_files, run, run_recbole_llmsrec

# Flags of this script only: removed from sys.argv before RecBole's Config reads it.
OWN_FLAGS = ("--resume", "--compare", "--seeds", "--probes", "--results_dir", "--report", "--stored_only", "--recommend",
             "--export", "--users", "--topk", "--out")


def strip_own_flags(argv: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    """``argv`` without this script's comparison flags and ``extra`` (``--flag=value`` or ``--flag value``)."""
    flags = OWN_FLAGS + extra
    kept, skip_value = [], False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg in flags:
            skip_value = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in flags)):
            kept.append(arg)
    return kept


def main() -> None:
    # No abbreviations: RecBole's --seed=N must not be read as this script's --seeds=N.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model", "-m", type=str, default=None, help="name of the model")
    parser.add_argument("--dataset", "-d", type=str, default=None, help="name of the dataset")
    parser.add_argument("--config_files", type=str, default=None, help="space-separated config files")
    parser.add_argument("--compare", type=str, default=None,
                        help="comma-separated models to compare: names, Name[key=value,...] or presets (LLMSRec-noDU, LLMSRec-noU)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per model in --compare (mean ± std)")
    parser.add_argument("--seed", type=int, default=None,
                        help="RecBole's seed; with --compare the first of --seeds seeds (seed, seed + 1, ...)")
    parser.add_argument("--probes", type=str, default=None,
                        help="with --compare: shuffle,train_shuffle,similarity,breakdown or all")
    parser.add_argument("--results_dir", type=str, default="results", help="where --compare writes its tables")
    parser.add_argument("--report", type=str, default="True", choices=("True", "False"),
                        help="with --compare: write the tables and charts (False: only store the rows, "
                             "leaving the profile's report as it is)")
    parser.add_argument("--stored_only", type=str, default="False", choices=("True", "False"),
                        help="with --compare: draw the report from the stored rows, training and evaluating nothing "
                             "(models or seeds not stored are left out; rows name how many seeds they hold)")
    parser.add_argument("--resume", type=str, default=None,
                        help="checkpoint of an unfinished run: continue it with its own settings")
    parser.add_argument("--recommend", type=str, default=None, help="checkpoint: write top-k items per user to --out")
    parser.add_argument("--export", type=str, default=None, help="checkpoint: write user and item vectors to --out")
    parser.add_argument("--users", type=str, default=None, help="with --recommend: comma-separated user tokens (default: all)")
    parser.add_argument("--topk", type=int, default=10, help="with --recommend: items per user")
    parser.add_argument("--out", type=str, default=None, help="file written by --recommend (.tsv) or --export (.safetensors)")
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine (one per GPU; CPU ranks without GPUs)")
    parser.add_argument("--ip", type=str, default="localhost", help="address of the machine of rank 0")
    parser.add_argument("--port", type=str, default="5678", help="free port on the machine of rank 0")
    parser.add_argument("--world_size", type=int, default=-1, help="processes on all machines (default: nproc)")
    parser.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    args, _ = parser.parse_known_args()  # --key=value overrides are read by RecBole's Config

    if args.recommend or args.export:
        use_trained_model(parser, args)
        return
    if args.resume:
        if [arg for arg in sys.argv[1:] if not arg.startswith("--resume") and arg != args.resume]:
            parser.error("--resume continues a run with the settings stored in its checkpoint: give it alone")
        sys.argv = sys.argv[:1]  # RecBole's Config would read --resume as a setting
        run_recbole_llmsrec(resume=args.resume)
        return

    config_files = args.config_files.strip().split(" ") if args.config_files else None
    launched_by_torchrun = torchrun_settings()
    if args.compare is None:
        if args.probes or args.seeds != 1 or args.report != "True" or args.stored_only != "False":
            parser.error("--probes, --seeds, --report and --stored_only go with --compare=MODEL,... "
                         "(the models to train and probe)")
        if args.model is None and args.dataset is None and config_files is None:
            config_files = default_config_files()
        if launched_by_torchrun:  # this process is one rank: torchrun started the others
            run_recbole_llmsrec(model=args.model, dataset=args.dataset, config_file_list=config_files,
                                config_dict=launched_by_torchrun)
            return
        run(model=args.model, dataset=args.dataset, config_file_list=config_files, nproc=args.nproc,
            world_size=args.world_size, ip=args.ip, port=args.port, group_offset=args.group_offset)
        return
    if launched_by_torchrun or args.nproc != 1 or args.world_size != -1:
        parser.error("--compare runs its models one after another in one process: drop --nproc / torchrun")

    from recbole_llmsrec.compare import run_comparison

    if args.model is not None:
        parser.error("--compare takes the models; drop --model")
    # A command-line setting beats every config_dict in RecBole, so a --seed left there would give
    # every seed of the comparison the same one.
    sys.argv = [sys.argv[0]] + strip_own_flags(sys.argv[1:], extra=("--seed",))
    outcome = run_comparison(args.compare, dataset=args.dataset, config_files=config_files, seeds=args.seeds,
                             probe_names=args.probes, results_dir=args.results_dir, first_seed=args.seed,
                             report=args.report == "True", stored_only=args.stored_only == "True")
    print("\n".join(str(path) for path in outcome["files"]))


def use_trained_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--recommend`` (top-k items of every or the given users, as TSV) or ``--export`` (vectors)."""
    from recbole_llmsrec.recommend import Recommender

    if args.recommend and args.export:
        parser.error("--recommend and --export are two runs: give one")
    if not args.out:
        parser.error("--recommend and --export write to --out=FILE")
    sys.argv = [sys.argv[0]] + strip_own_flags(sys.argv[1:])  # the checkpoint's settings, not these flags
    recommender = Recommender.from_checkpoint(args.recommend or args.export)
    if args.export:
        recommender.export(args.out, show_progress=True)
    else:
        users = args.users.split(",") if args.users else None
        rows = recommender.recommend_users(users, k=args.topk, show_progress=True)
        with open(args.out, "w", encoding="utf-8") as out:
            out.write("user\trank\titem\tscore\n")
            for row in rows:
                out.writelines(f"{row.user}\t{rank}\t{item}\t{score:.6g}\n"
                               for rank, (item, score) in enumerate(zip(row.items, row.scores), 1))
    print(args.out)


if __name__ == "__main__":
    main()
