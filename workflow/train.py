"""Stage: train one (sample, seed) job (records.npz, history.npz, summary.json beside each other).

A killed job rerun resumes from the job's last complete epoch (checkpoints/ in the same folder).
"""

from pathlib import Path

from dynsparse.integrity import verify_mnist
from dynsparse.registry import parse_settings_json
from dynsparse.stage import stage_log
from dynsparse.train import OUTPUT_NAMES, train_sample

out_dir = Path(snakemake.output.summary).parent
for key, name in OUTPUT_NAMES.items():
    if Path(snakemake.output[key]) != out_dir / name:
        raise ValueError(f"output {key} must be {out_dir / name}, got {snakemake.output[key]}")

mnist = verify_mnist(snakemake.params.mnist)  # says which file, both hashes and the fix, once
with stage_log(snakemake.log[0]) as log:
    train_sample(
        settings=parse_settings_json(snakemake.wildcards.model, snakemake.params.settings),
        mnist_path=mnist,
        ops_path=snakemake.input.ops,
        out_dir=out_dir,
        threads=snakemake.threads,
        log=log,
        sample=snakemake.params.sample,
    )
