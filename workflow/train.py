"""Stage: train one sample (records.npz, history.npz, summary.json beside each other).

A killed job rerun resumes from the sample's last complete epoch (checkpoints/ in the same folder).
"""

from pathlib import Path

from dynsparse.registry import parse_settings_json
from dynsparse.stage import stage_log
from dynsparse.train import OUTPUT_NAMES, train_sample

out_dir = Path(snakemake.output.summary).parent
for key, name in OUTPUT_NAMES.items():
    if Path(snakemake.output[key]) != out_dir / name:
        raise ValueError(f"output {key} must be {out_dir / name}, got {snakemake.output[key]}")

with stage_log(snakemake.log[0]) as log:
    train_sample(
        settings=parse_settings_json(snakemake.wildcards.model, snakemake.params.settings),
        mnist_path=snakemake.input.mnist,
        ops_path=snakemake.input.ops,
        out_dir=out_dir,
        threads=snakemake.threads,
        log=log,
    )
